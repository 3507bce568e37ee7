// quicgo-peer: an independent QUIC peer for connmgr's tests, written on
// quic-go (not ngtcp2), so that the two QUIC stacks check each other.
//
//	quicgo-peer server [--listen IP] [--port N] [--alpn A]
//	quicgo-peer client [--pin B64 | --insecure] [--alpn A] [--timeout S]
//	                   [--write-timeout S] [--streams N --bytes B] [--stats] ADDR PORT
//
// server: a stream server with a self-signed key made at start. It prints one
// JSON line on stdout, {"port": N, "pin": "B64"} (pin: base64 SHA-256 of the
// certificate's SubjectPublicKeyInfo, as connmgr pins it), then echoes every
// bidirectional stream (the client's FIN is answered with FIN once echoed).
// A stream whose first bytes are "RESET\n" is reset (RESET_STREAM and
// STOP_SENDING). End of input on stdin stops it.
//
// client: dials ADDR PORT, opens one stream, copies stdin to it and the stream
// to stdout; stdin's EOF half-closes the stream (FIN). It exits when both
// directions are done, so it works as an ssh ProxyCommand. With --streams N it
// opens N streams at once instead, sends --bytes B of a pattern on each,
// half-closes, and checks that the same bytes come back.
// Exit status: 0 done, 1 usage or dial error, 3 stream reset or other stream
// error, 4 a write blocked longer than --write-timeout, 5 echo mismatch.
// --stats prints {"sent": N, "received": N, "error": "..."} on stderr at the end.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	quic "github.com/lucas-clemente/quic-go"
)

const (
	exitOK          = 0
	exitUsage       = 1
	exitStreamError = 3
	exitWriteTimout = 4
	exitMismatch    = 5
	resetMarker     = "RESET\n"
	chunkSize       = 32 * 1024
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		os.Exit(runServer(os.Args[2:]))
	case "client":
		os.Exit(runClient(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: quicgo-peer server [--listen IP] [--port N] [--alpn A]")
	fmt.Fprintln(os.Stderr, "       quicgo-peer client [--pin B64 | --insecure] [--alpn A] [--timeout S]")
	fmt.Fprintln(os.Stderr, "                          [--write-timeout S] [--streams N --bytes B] [--stats] ADDR PORT")
	os.Exit(exitUsage)
}

// spkiPin is the pin connmgr compares: base64 SHA-256 of the SubjectPublicKeyInfo.
func spkiPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func selfSigned() (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	template := x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "quicgo-peer"},
		DNSNames:     []string{"localhost", "node"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed}, spkiPin(parsed), nil
}

// ---- server ----

func runServer(args []string) int {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 0, "UDP port (0: any)")
	alpn := fs.String("alpn", "connmgr", "ALPN protocol")
	fs.Parse(args)
	if fs.NArg() != 0 {
		usage()
	}
	cert, pin, err := selfSigned()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicgo-peer: key:", err)
		return exitUsage
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{*alpn}}
	conf := &quic.Config{MaxIdleTimeout: 60 * time.Second, MaxIncomingStreams: 1000}
	ln, err := quic.ListenAddr(net.JoinHostPort(*listen, strconv.Itoa(*port)), tlsConf, conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicgo-peer: listen:", err)
		return exitUsage
	}
	line, _ := json.Marshal(map[string]interface{}{"port": ln.Addr().(*net.UDPAddr).Port, "pin": pin})
	fmt.Println(string(line))
	go func() {
		io.Copy(io.Discard, os.Stdin) // end of input: stop
		ln.Close()
	}()
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return exitOK
		}
		go serveConn(conn)
	}
}

func serveConn(conn quic.Connection) {
	for {
		s, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go serveStream(s)
	}
}

// serveStream echoes the stream, or resets it when it starts with "RESET\n".
// It reads only as far as it needs to decide, so a client waiting for its
// first bytes to come back is not kept waiting.
func serveStream(s quic.Stream) {
	var head []byte
	buf := make([]byte, chunkSize)
	var err error
	for err == nil && len(head) < len(resetMarker) && bytes.HasPrefix([]byte(resetMarker), head) {
		var n int
		n, err = s.Read(buf)
		head = append(head, buf[:n]...)
	}
	if bytes.HasPrefix(head, []byte(resetMarker)) {
		s.CancelRead(1)
		s.CancelWrite(1)
		return
	}
	if err != nil && err != io.EOF {
		s.CancelWrite(1) // the client reset its side
		return
	}
	if _, werr := s.Write(head); werr != nil {
		s.CancelRead(1)
		return
	}
	if err == nil {
		if _, err = io.CopyBuffer(s, s, buf); err != nil {
			s.CancelRead(1)
			s.CancelWrite(1)
			return
		}
	}
	s.Close() // FIN once all is echoed
}

// ---- client ----

type clientOptions struct {
	pin          string
	insecure     bool
	alpn         string
	timeout      time.Duration
	writeTimeout time.Duration
	streams      int
	bytes        int64
	stats        bool
}

type counters struct {
	sent, received int64
}

func runClient(args []string) int {
	var o clientOptions
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	fs.StringVar(&o.pin, "pin", "", "base64 SHA-256 of the server's SubjectPublicKeyInfo")
	fs.BoolVar(&o.insecure, "insecure", false, "accept any server key")
	fs.StringVar(&o.alpn, "alpn", "connmgr", "ALPN protocol")
	timeout := fs.Float64("timeout", 10, "seconds for the handshake and each stream open")
	writeTimeout := fs.Float64("write-timeout", 0, "seconds one write may block (0: no limit)")
	fs.IntVar(&o.streams, "streams", 0, "open N streams at once, each echo-checked")
	fs.Int64Var(&o.bytes, "bytes", 65536, "bytes sent on each stream with --streams")
	fs.BoolVar(&o.stats, "stats", false, "print byte counts as JSON on stderr at the end")
	fs.Parse(args)
	if fs.NArg() != 2 || (o.pin == "") == !o.insecure {
		usage()
	}
	o.timeout = time.Duration(*timeout * float64(time.Second))
	o.writeTimeout = time.Duration(*writeTimeout * float64(time.Second))

	conn, err := dial(&o, net.JoinHostPort(fs.Arg(0), fs.Arg(1)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicgo-peer: dial:", err)
		return exitUsage
	}
	var c counters
	var code int
	if o.streams > 0 {
		code, err = manyStreams(&o, conn, &c)
	} else {
		code, err = pipeStream(&o, conn, &c)
	}
	conn.CloseWithError(0, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "quicgo-peer:", err)
	}
	if o.stats {
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		line, _ := json.Marshal(map[string]interface{}{
			"sent": atomic.LoadInt64(&c.sent), "received": atomic.LoadInt64(&c.received), "error": msg})
		fmt.Fprintln(os.Stderr, string(line))
	}
	return code
}

func dial(o *clientOptions, addr string) (quic.Connection, error) {
	tlsConf := &tls.Config{
		InsecureSkipVerify: true, // the pin below is the check, as in connmgr
		NextProtos:         []string{o.alpn},
		ServerName:         "node",
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if o.insecure {
				return nil
			}
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if got := spkiPin(cert); got != o.pin {
				return fmt.Errorf("pin mismatch: server key %s", got)
			}
			return nil
		},
	}
	conf := &quic.Config{MaxIdleTimeout: 60 * time.Second, KeepAlivePeriod: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	return quic.DialAddrContext(ctx, addr, tlsConf, conf)
}

// classify turns a stream error into an exit status.
func classify(err error) int {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return exitWriteTimout
	}
	return exitStreamError
}

// pipeStream joins stdin and stdout to one stream.
func pipeStream(o *clientOptions, conn quic.Connection, c *counters) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	s, err := conn.OpenStreamSync(ctx)
	cancel()
	if err != nil {
		return exitUsage, fmt.Errorf("open stream: %w", err)
	}
	var first firstError
	writeDone := make(chan struct{})
	go func() {
		if first.set(sendAll(o, s, os.Stdin, &c.sent), "stream write") {
			s.CancelWrite(1)
		}
		close(writeDone)
	}()
	if first.set(copyCounted(os.Stdout, s, &c.received), "stream read") {
		s.CancelWrite(1)
		return first.result()
	}
	<-writeDone
	return first.result()
}

// firstError keeps the error that happened first: a write that timed out
// makes the server reset the stream, and the read then fails too.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error, what string) bool {
	if err == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = fmt.Errorf("%s: %w", what, err)
	}
	return true
}

func (f *firstError) result() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return exitOK, nil
	}
	return classify(f.err), f.err
}

// sendAll copies r to the stream, each write bounded by --write-timeout, then
// half-closes the stream. On an error the caller resets the stream, once it
// has noted the error (the server answers a reset with a reset).
func sendAll(o *clientOptions, s quic.Stream, r io.Reader, sent *int64) error {
	buf := make([]byte, chunkSize)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if o.writeTimeout > 0 {
				s.SetWriteDeadline(time.Now().Add(o.writeTimeout))
			}
			w, err := s.Write(buf[:n])
			atomic.AddInt64(sent, int64(w))
			if err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return s.Close()
		}
		if rerr != nil {
			return rerr
		}
	}
}

func copyCounted(w io.Writer, r io.Reader, count *int64) error {
	buf := make([]byte, chunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			atomic.AddInt64(count, int64(n))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// pattern is the bytes stream i sends: recognisable and different per stream.
func pattern(i int, n int64) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte((int64(k) + int64(i)*7) % 251)
	}
	return b
}

// manyStreams opens o.streams streams at once and checks each one's echo.
func manyStreams(o *clientOptions, conn quic.Connection, c *counters) (int, error) {
	var wg sync.WaitGroup
	codes := make([]int, o.streams)
	errs := make([]error, o.streams)
	for i := 0; i < o.streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i], errs[i] = echoCheck(o, conn, i, c)
		}(i)
	}
	wg.Wait()
	for i := range codes {
		if codes[i] != exitOK {
			return codes[i], fmt.Errorf("stream %d of %d: %w", i, o.streams, errs[i])
		}
	}
	return exitOK, nil
}

func echoCheck(o *clientOptions, conn quic.Connection, i int, c *counters) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	s, err := conn.OpenStreamSync(ctx)
	cancel()
	if err != nil {
		return exitStreamError, fmt.Errorf("open stream: %w", err)
	}
	want := pattern(i, o.bytes)
	var first firstError
	writeDone := make(chan struct{})
	go func() {
		if first.set(sendAll(o, s, bytes.NewReader(want), &c.sent), "stream write") {
			s.CancelWrite(1)
		}
		close(writeDone)
	}()
	var got bytes.Buffer
	if first.set(copyCounted(&got, s, &c.received), "stream read") {
		s.CancelWrite(1)
		return first.result()
	}
	<-writeDone
	if code, err := first.result(); err != nil {
		return code, err
	}
	if !bytes.Equal(got.Bytes(), want) {
		return exitMismatch, fmt.Errorf("echo differs: sent %d bytes, got %d back", len(want), got.Len())
	}
	return exitOK, nil
}
