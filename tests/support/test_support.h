// Helpers shared by the lib/ tests: temporary directories, running a libuv
// loop until a condition holds (always bounded), a TCP listener on the
// test's own loop that counts, holds, closes or resets what it accepts, and
// child processes: connmgr-test-peer with a fresh certificate.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace connmgr::test {

// mkdtemp under $CONNMGR_TEST_TMP or /tmp; removed (recursively) on destruction.
class TempDir {
 public:
  // Under $CONNMGR_TEST_TMP (the build directory's tmp), else /tmp.
  TempDir();
  // Under `root`, created if missing.
  explicit TempDir(const std::string& root);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // The system's temporary directory ($TMPDIR, else /tmp): for files that
  // another user must reach, which the build directory may not allow (a
  // clone under /root, mode 0700).
  static std::string system_root();
  static std::string test_root();  // $CONNMGR_TEST_TMP, else /tmp
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs `loop` until `done()` is true or `limit` passes; returns done().
bool run_until(uv_loop_t* loop, const std::function<bool()>& done,
               std::chrono::milliseconds limit = std::chrono::seconds(10));
// Runs the loop for `d`, whatever happens.
void run_for(uv_loop_t* loop, std::chrono::milliseconds d);
// Closes every handle still open on the loop and runs it until it is empty.
void drain_loop(uv_loop_t* loop);

// A TCP listener on 127.0.0.1 (ephemeral port) driven by the given loop.
class TcpListener {
 public:
  explicit TcpListener(uv_loop_t* loop, const char* ip = "127.0.0.1");
  ~TcpListener();
  int port() const { return port_; }
  int accepted() const { return accepted_; }
  // Accepted links still open on our side; how many saw EOF from the peer.
  size_t open_links() const;
  int eofs_seen() const { return eofs_; }
  void close_all();  // FIN to every accepted link
  void reset_all();  // RST to every accepted link
  // Stop listening (subsequent dials are refused).
  void stop();

  struct Peer;

 private:
  uv_loop_t* loop_;
  uv_tcp_t* server_ = nullptr;
  int port_ = 0;
  int accepted_ = 0;
  int eofs_ = 0;
  std::vector<Peer*> peers_;
  std::shared_ptr<bool> alive_;
};

// A port on 127.0.0.1 where nothing listens (bound, then closed).
int closed_port();

// A TCP port on 127.0.0.1 whose listener never accepts and whose accept queue
// is full, so further SYNs are dropped: a dial there can only time out.
class BlackholedTcpPort {
 public:
  BlackholedTcpPort();
  ~BlackholedTcpPort();
  int port() const { return port_; }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
  int port_ = 0;
};

// A UDP port on 127.0.0.1 bound by a socket that never reads: no answer and
// no ICMP, so a QUIC dial there can only time out.
class SilentUdpPort {
 public:
  SilentUdpPort();
  ~SilentUdpPort();
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A program as a child process: we write to its stdin and read lines from
// its stdout (pipes); it is killed (SIGKILL) by its pid at the end, unless
// it has been waited for. Throws std::runtime_error when it cannot start.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> args);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // `line` and a '\n' on its stdin; false if not all was written.
  bool write_line(const std::string& line);
  // One line of its stdout without the '\n'; what came before EOF or the
  // timeout otherwise.
  std::string read_line(int timeout_ms = 20000);
  void kill_now();
  void wait_exit();  // for a child told to exit

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
};

// A fresh self-signed EC certificate in `dir` (CN=localhost, names
// localhost and 127.0.0.1) and its pin: base64 SHA-256 of the public key.
struct TestCertificate {
  std::string key, cert, pin;
};
TestCertificate make_certificate(const TempDir& dir);

// connmgr-test-peer ($CONNMGR_TEST_PEER, else tests/peer/connmgr-test-peer)
// with a fresh certificate, listening on 127.0.0.1 TCP and QUIC (any port);
// `extra`: more arguments, e.g. {"--quic-streams", "echo"}. Commands
// (close-all, vanish, ...) go to its stdin (tests/peer/test_peer.cc).
class TestPeerProcess {
 public:
  TestPeerProcess(const TempDir& dir, std::vector<std::string> extra = {});
  // Sends a command line.
  bool command(const std::string& line) { return child_.write_line(line); }
  std::string read_line(int timeout_ms = 5000) { return child_.read_line(timeout_ms); }
  ChildProcess& child() { return child_; }

  // "count": the peer's view of what happened.
  struct Count {
    int tcp = -1, quic = -1, open_tcp = -1, open_quic = -1, client_closes = -1;
  };
  Count count();

  std::string pin;
  int tcp_port = 0;
  int quic_port = 0;

 private:
  TestCertificate cert_;
  ChildProcess child_;
};

}  // namespace connmgr::test
