#include "test_support.h"

#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

extern char** environ;

namespace connmgr::test {

TempDir::TempDir() : TempDir(test_root()) {}

std::string TempDir::test_root() {
  const char* base = getenv("CONNMGR_TEST_TMP");
  return base && *base ? base : "/tmp";
}

std::string TempDir::system_root() {
  const char* base = getenv("TMPDIR");
  return base && *base ? base : "/tmp";
}

TempDir::TempDir(const std::string& root) {
  std::filesystem::create_directories(root);
  std::string tmpl = root + "/connmgr-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool run_until(uv_loop_t* loop, const std::function<bool()>& done,
               std::chrono::milliseconds limit) {
  const uint64_t deadline = uv_hrtime() + static_cast<uint64_t>(limit.count()) * 1000000ull;
  // A watchdog timer guarantees that uv_run(ONCE) returns at least every 10 ms.
  uv_timer_t watchdog;
  uv_timer_init(loop, &watchdog);
  uv_timer_start(&watchdog, [](uv_timer_t*) {}, 10, 10);
  while (!done() && uv_hrtime() < deadline) uv_run(loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return done();
}

void run_for(uv_loop_t* loop, std::chrono::milliseconds d) {
  run_until(loop, [] { return false; }, d);
}

void drain_loop(uv_loop_t* loop) {
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
}

struct TcpListener::Peer {
  uv_tcp_t handle{};
  TcpListener* owner = nullptr;
  std::shared_ptr<bool> owner_alive;
  bool closing = false;
};

namespace {

void close_peer(TcpListener::Peer* p) {
  if (p->closing) return;
  p->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle),
           [](uv_handle_t* h) { delete static_cast<TcpListener::Peer*>(h->data); });
}

}  // namespace

TcpListener::TcpListener(uv_loop_t* loop, const char* ip)
    : loop_(loop), alive_(std::make_shared<bool>(true)) {
  server_ = new uv_tcp_t;
  uv_tcp_init(loop_, server_);
  server_->data = this;
  sockaddr_storage ss{};
  if (strchr(ip, ':')) {
    uv_ip6_addr(ip, 0, reinterpret_cast<sockaddr_in6*>(&ss));
  } else {
    uv_ip4_addr(ip, 0, reinterpret_cast<sockaddr_in*>(&ss));
  }
  if (uv_tcp_bind(server_, reinterpret_cast<sockaddr*>(&ss), 0) != 0)
    throw std::runtime_error("bind failed");
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), 128, [](uv_stream_t* s, int status) {
    if (status < 0) return;
    auto* self = static_cast<TcpListener*>(s->data);
    auto* p = new Peer;
    p->handle.data = p;
    p->owner = self;
    p->owner_alive = self->alive_;
    uv_tcp_init(self->loop_, &p->handle);
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&p->handle)) != 0) {
      close_peer(p);
      return;
    }
    self->accepted_++;
    self->peers_.push_back(p);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&p->handle),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char scratch[4096];
          *buf = uv_buf_init(scratch, sizeof scratch);
        },
        [](uv_stream_t* st, ssize_t n, const uv_buf_t*) {
          if (n >= 0) return;
          auto* p = static_cast<Peer*>(st->data);
          if (*p->owner_alive) {
            if (n == UV_EOF) p->owner->eofs_++;
            auto& v = p->owner->peers_;
            v.erase(std::remove(v.begin(), v.end(), p), v.end());
          }
          close_peer(p);
        });
  });
  if (rc != 0) throw std::runtime_error("listen failed");
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(server_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

TcpListener::~TcpListener() {
  *alive_ = false;
  stop();
  for (auto* p : peers_) close_peer(p);
  peers_.clear();
}

size_t TcpListener::open_links() const { return peers_.size(); }

void TcpListener::close_all() {
  for (auto* p : peers_) close_peer(p);
  peers_.clear();
}

void TcpListener::reset_all() {
  for (auto* p : peers_) {
    if (!p->closing) {
      p->closing = true;
      uv_tcp_close_reset(&p->handle,
                         [](uv_handle_t* h) { delete static_cast<Peer*>(h->data); });
    }
  }
  peers_.clear();
}

void TcpListener::stop() {
  if (server_) {
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    server_ = nullptr;
  }
}

int closed_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

BlackholedTcpPort::BlackholedTcpPort() {
  listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_, 0) != 0)
    throw std::runtime_error("cannot make a blackholed listener");
  socklen_t len = sizeof a;
  getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  // A backlog of 0 still admits a connection or two; a few more fill it.
  for (int i = 0; i < 4; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    fillers_.push_back(c);
  }
  usleep(50 * 1000);  // let the handshakes of the fillers complete
}

BlackholedTcpPort::~BlackholedTcpPort() {
  for (int c : fillers_) ::close(c);
  ::close(listener_);
}

SilentUdpPort::SilentUdpPort() {
  fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    throw std::runtime_error("cannot bind a UDP socket");
  socklen_t len = sizeof a;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
}

SilentUdpPort::~SilentUdpPort() { ::close(fd_); }

ChildProcess::ChildProcess(std::vector<std::string> args) {
  int in[2], out[2];
  if (pipe(in) != 0) throw std::runtime_error("pipe failed");
  if (pipe(out) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    throw std::runtime_error("pipe failed");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot start " + args[0] + ": " + strerror(rc));
  }
}

ChildProcess::~ChildProcess() {
  kill_now();
  if (to_ >= 0) ::close(to_);
  if (from_ >= 0) ::close(from_);
}

bool ChildProcess::write_line(const std::string& line) {
  const std::string l = line + "\n";
  return write(to_, l.data(), l.size()) == static_cast<ssize_t>(l.size());
}

std::string ChildProcess::read_line(int timeout_ms) {
  std::string line;
  char c;
  for (;;) {
    pollfd p{from_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) break;
    if (read(from_, &c, 1) != 1 || c == '\n') break;
    line += c;
  }
  return line;
}

void ChildProcess::kill_now() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void ChildProcess::wait_exit() {
  if (pid_ <= 0) return;
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

TestCertificate make_certificate(const TempDir& dir) {
  TestCertificate c{dir.file("key.pem"), dir.file("cert.pem"), {}};
  const std::string gen = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout '" +
                          c.key + "' -out '" + c.cert + "' -days 2 -subj /CN=localhost "
                          "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
  if (std::system(gen.c_str()) != 0) throw std::runtime_error("openssl req failed");
  FILE* p = popen(("openssl x509 -in '" + c.cert + "' -pubkey -noout | openssl pkey -pubin -outform der | "
                   "openssl dgst -sha256 -binary | openssl enc -base64").c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  char buf[128] = {};
  const bool got = fgets(buf, sizeof buf, p) != nullptr;
  pclose(p);
  if (!got) throw std::runtime_error("no pin from openssl");
  c.pin = buf;
  while (!c.pin.empty() && c.pin.back() == '\n') c.pin.pop_back();
  return c;
}

namespace {

std::vector<std::string> test_peer_args(const TestCertificate& cert, std::vector<std::string> extra) {
  const char* exe = getenv("CONNMGR_TEST_PEER");
  std::vector<std::string> args = {exe ? exe : "tests/peer/connmgr-test-peer", "--tcp", "0", "--quic", "0",
                                   "--cert", cert.cert, "--key", cert.key};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

}  // namespace

TestPeerProcess::TestPeerProcess(const TempDir& dir, std::vector<std::string> extra)
    : cert_(make_certificate(dir)), child_(test_peer_args(cert_, std::move(extra))) {
  pin = cert_.pin;
  const std::string ready = child_.read_line();
  if (sscanf(ready.c_str(), "ready tcp=%d quic=%d", &tcp_port, &quic_port) != 2)
    throw std::runtime_error("connmgr-test-peer did not start: '" + ready + "'");
}

TestPeerProcess::Count TestPeerProcess::count() {
  Count c;
  if (!command("count")) return c;
  const std::string l = read_line();
  sscanf(l.c_str(), "count tcp=%d quic=%d open_tcp=%d open_quic=%d client_closes=%d", &c.tcp, &c.quic,
         &c.open_tcp, &c.open_quic, &c.client_closes);
  return c;
}

}  // namespace connmgr::test
