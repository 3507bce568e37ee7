// Helpers shared by the lib/ tests: temporary directories, running a libuv
// loop until a condition holds (always bounded), and a TCP listener on the
// test's own loop that counts, holds, closes or resets what it accepts.
#pragma once

#include <netinet/in.h>
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

}  // namespace connmgr::test
