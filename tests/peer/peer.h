// The objects of connmgr-test-peer (tests/peer/test_peer.cc says what it
// does): the Peer with its listeners, the QUIC connections it accepted and
// their streams, the TCP links. The Peer owns connections and links, a
// connection owns its streams; each may be destroyed at any time (its libuv
// handles are UvHandle/Timer). The loop's thread only.
#pragma once

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "send_queue.h"
#include "util/uv_handle.h"
#include "uv_io.h"

namespace connmgr::test_peer {

using connmgr::Timer;
using connmgr::UvHandle;

// Bytes a stream holds for the side that is behind before it stops taking
// more from the other side.
constexpr uint64_t kStreamBuffer = 256 * 1024;
constexpr uint64_t kResetCode = 1;

enum class Mode { kNone, kEcho, kSend, kReset, kHold, kForward };

struct StreamMode {
  Mode mode = Mode::kNone;
  uint64_t send_bytes = 0;  // send:N
  int forward_port = 0;     // forward:PORT
};

// Parses a --tcp-streams / --quic-streams value (forward:PORT for QUIC only).
bool parse_mode(const std::string& text, bool quic, StreamMode* out);

// The pattern of send:N, from stream offset `from` on: byte k is k % 251.
std::string pattern(uint64_t from, size_t n);

struct Peer;
struct ServerConn;

// One bidirectional stream a client opened on a QUIC connection.
struct QStream {
  ServerConn* conn = nullptr;
  int64_t id = 0;
  SendQueue out;
  bool reset_wanted = false;   // reset mode: reset at the next chance
  bool fin_received = false;
  bool quic_closed = false;    // ngtcp2 closed it; only the TCP side is left
  uint64_t to_generate = 0;    // send:N bytes not queued yet
  uint64_t generated = 0;
  // forward:PORT
  UvHandle<uv_tcp_t> tcp;
  bool tcp_connected = false, tcp_eof = false, tcp_shut = false, tcp_reading = false;
  std::deque<std::string> before_connect;
  size_t tcp_writes = 0;

  ~QStream() {
    // A gateway stream that ends before both sides finished is a reset.
    if (tcp && !(tcp_eof && tcp_shut)) reset_close(tcp);
  }
  void refill();
  void credit(uint64_t n);
  void to_tcp(std::string bytes);
  void tcp_flushed();
  void tcp_read(ssize_t n, const uv_buf_t* b);
  void start_tcp_reading();
  void reset();
  bool tcp_done() const { return tcp_eof && tcp_shut; }
};

// One QUIC connection accepted by the peer.
struct ServerConn {
  Peer* peer = nullptr;
  ngtcp2_conn* conn = nullptr;
  gnutls_session_t tls = nullptr;
  ngtcp2_crypto_conn_ref ref{};
  sockaddr_storage remote{};
  ngtcp2_path path{};
  Timer timer;
  std::vector<std::string> cids;
  std::map<int64_t, std::unique_ptr<QStream>> streams;
  int64_t last_sent = -1;  // streams take turns sending
  bool established = false;

  ~ServerConn() {
    streams.clear();
    if (conn) ngtcp2_conn_del(conn);
    if (tls) gnutls_deinit(tls);
  }
  QStream* find(int64_t id) {
    auto it = streams.find(id);
    return it == streams.end() ? nullptr : it->second.get();
  }
  QStream* next_sender(const std::set<int64_t>& blocked);
  void open_stream(int64_t id);
  void on_data(QStream* s, uint32_t flags, const uint8_t* data, size_t n);
  void on_closed(int64_t id, bool reset);
};

// One accepted TCP connection.
struct TcpLink {
  Peer* peer = nullptr;
  UvHandle<uv_tcp_t> tcp;
  size_t writes = 0;       // bytes written and not yet done
  bool eof = false, shut = false, reading = false;
  uint64_t to_generate = 0, generated = 0;

  void start();
  void read(ssize_t n, const uv_buf_t* b);
  void resume();
  void written(size_t n);
  void maybe_finish();
};

struct Peer {
  uv_loop_t* loop = nullptr;
  UvHandle<uv_tcp_t> tcp_server;
  std::map<TcpLink*, std::unique_ptr<TcpLink>> tcp_links;
  UvHandle<uv_udp_t> udp;
  sockaddr_storage local{};
  gnutls_certificate_credentials_t cred = nullptr;
  std::vector<std::string> alpns;
  std::map<std::string, ServerConn*> by_cid;
  std::map<ServerConn*, std::unique_ptr<ServerConn>> conns;
  StreamMode tcp_mode, quic_mode;
  int tcp_accepted = 0;
  int quic_accepted = 0;
  int client_closes = 0;
  UvHandle<uv_pipe_t> input;
  std::string input_buf;

  void on_datagram(const uint8_t* data, size_t n, const sockaddr* from);
  ServerConn* accept_quic(const uint8_t* data, size_t n, const sockaddr* from);
  bool start_conn(ServerConn* c, const ngtcp2_pkt_hd& hd, const ngtcp2_cid& scid);
  void write_conn(ServerConn* c);
  void arm(ServerConn* c);
  void remove(ServerConn* c);
  void close_conn(ServerConn* c);
  void accept_tcp();
  void drop(TcpLink* t) { tcp_links.erase(t); }
  void command(const std::string& line);
  void stop();
};

// The callbacks that serve streams, added to a connection's when the peer
// has a QUIC stream mode.
void set_stream_callbacks(ngtcp2_callbacks* cb);

}  // namespace connmgr::test_peer
