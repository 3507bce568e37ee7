// QuicConnector against the project's own peer (tests/peer): the life of a
// link after the handshake, driven by the peer's commands.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "net/tcp_connector.h"
#include "quic/quic_connector.h"
#include "test_support.h"

extern char** environ;

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TempDir;

namespace {

std::string peer_path() {
  const char* p = getenv("CONNMGR_TEST_PEER");
  return p ? p : "tests/peer/connmgr-test-peer";
}

// connmgr-test-peer as a child process: commands on its stdin, answers on
// its stdout. Ended by its pid.
class PeerProcess {
 public:
  explicit PeerProcess(const TempDir& dir) {
    const std::string key = dir.file("peer-key.pem"), cert = dir.file("peer-cert.pem");
    const std::string gen = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout '" +
                            key + "' -out '" + cert + "' -days 2 -subj /CN=localhost "
                            "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
    REQUIRE(std::system(gen.c_str()) == 0);
    FILE* p = popen(("openssl x509 -in '" + cert + "' -pubkey -noout | openssl pkey -pubin -outform der | "
                     "openssl dgst -sha256 -binary | openssl enc -base64").c_str(), "r");
    char buf[128] = {};
    REQUIRE(fgets(buf, sizeof buf, p));
    pclose(p);
    pin = buf;
    while (!pin.empty() && (pin.back() == '\n')) pin.pop_back();

    int in[2], out[2];
    REQUIRE(pipe(in) == 0);
    REQUIRE(pipe(out) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    std::vector<std::string> args = {peer_path(), "--tcp", "0", "--quic", "0", "--cert", cert, "--key", key};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
    const std::string ready = read_line();
    REQUIRE(sscanf(ready.c_str(), "ready tcp=%d quic=%d", &tcp_port, &quic_port) == 2);
  }
  ~PeerProcess() {
    if (to_ >= 0) close(to_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (from_ >= 0) close(from_);
  }

  void send(const std::string& command) {
    const std::string line = command + "\n";
    REQUIRE(write(to_, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  }

  std::string read_line(int timeout_ms = 5000) {
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

  // "count ..." parsed: the peer's view of what happened.
  struct Count {
    int tcp = -1, quic = -1, open_tcp = -1, open_quic = -1, client_closes = -1;
  };
  Count count() {
    send("count");
    Count c;
    const std::string l = read_line();
    sscanf(l.c_str(), "count tcp=%d quic=%d open_tcp=%d open_quic=%d client_closes=%d", &c.tcp, &c.quic,
           &c.open_tcp, &c.open_quic, &c.client_closes);
    return c;
  }

  void wait_exit() {
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string pin;
  int tcp_port = 0;
  int quic_port = 0;

 private:
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
};

struct Outcome {
  bool done = false;
  std::unique_ptr<Connection> conn;
  Error error;
  std::string dropped;
};

class Fixture {
 public:
  Fixture() { uv_loop_init(&loop); }
  ~Fixture() {
    connector.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  void make(QuicOptions o = {}) {
    auto c = QuicConnector::create(&loop, std::move(o));
    REQUIRE(c.ok());
    connector = std::move(c).value();
  }

  std::shared_ptr<Outcome> dial(const PeerProcess& peer, std::optional<std::string> pin) {
    DialRequest r;
    r.node_id = "p";
    r.protocol = "quic";
    r.address = "127.0.0.1";
    r.port = peer.quic_port;
    r.pin_sha256 = std::move(pin);
    r.timeout = 3s;
    auto o = std::make_shared<Outcome>();
    connector->connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      } else {
        o->error = res.error();
      }
    });
    REQUIRE(run_until(&loop, [&] { return o->done; }, 10s));
    return o;
  }

  uv_loop_t loop{};
  TempDir dir;
  std::unique_ptr<QuicConnector> connector;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "the default ALPN reaches the project's peer and close() sends CONNECTION_CLOSE") {
  PeerProcess peer(dir);
  make();
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  auto c = peer.count();
  CHECK(c.quic == 1);
  CHECK(c.open_quic == 1);
  o->conn->close();
  run_for(&loop, 100ms);
  c = peer.count();
  CHECK(c.client_closes == 1);
  CHECK(c.open_quic == 0);
  CHECK(o->dropped.empty());
}

TEST_CASE_METHOD(Fixture, "a link held past its handshake keeps rtt, keepalives and CONNECTION_CLOSE") {
  // Long enough for HANDSHAKE_DONE and several keepalives: the connector
  // frees the TLS session once the handshake is confirmed.
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 600ms;
  opts.keepalive = 150ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  run_for(&loop, 1000ms);
  CHECK(o->dropped.empty());
  CHECK(o->conn->is_active());
  REQUIRE(o->conn->rtt_ms().has_value());
  CHECK(*o->conn->rtt_ms() > 0.0);
  o->conn->close();
  run_for(&loop, 100ms);
  auto c = peer.count();
  CHECK(c.client_closes == 1);
  CHECK(c.open_quic == 0);
}

TEST_CASE_METHOD(Fixture, "a peer's CONNECTION_CLOSE ends the link with reason closed") {
  PeerProcess peer(dir);
  make();
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  peer.send("close-all");
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  CHECK(o->dropped == "closed");
  CHECK_FALSE(o->conn->is_active());
}

TEST_CASE_METHOD(Fixture, "a peer that forgets the connection is noticed by the idle timeout") {
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 800ms;
  opts.keepalive = 200ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  run_for(&loop, 1200ms);
  CHECK(o->dropped.empty());  // keepalives keep an idle link up past the idle timeout
  peer.send("reset-all");
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  CHECK(o->dropped == "idle_timeout");
}

TEST_CASE_METHOD(Fixture, "a peer that vanishes ends the link") {
  PeerProcess peer(dir);
  QuicOptions opts;
  opts.idle_timeout = 800ms;
  opts.keepalive = 200ms;
  make(opts);
  auto o = dial(peer, peer.pin);
  REQUIRE(o->conn);
  peer.send("vanish");
  peer.wait_exit();
  REQUIRE(run_until(&loop, [&] { return !o->dropped.empty(); }, 5s));
  // The kernel may answer a keepalive with port unreachable before the timeout.
  CHECK((o->dropped == "idle_timeout" || o->dropped == "closed"));
}

TEST_CASE_METHOD(Fixture, "the peer's TCP side holds, closes and resets links") {
  PeerProcess peer(dir);
  TcpConnector tcp(&loop, TcpOptions{});
  DialRequest r;
  r.protocol = "tcp";
  r.address = "127.0.0.1";
  r.port = peer.tcp_port;
  auto dial_tcp = [&] {
    auto o = std::make_shared<Outcome>();
    tcp.connect(r, [o](Result<std::unique_ptr<Connection>> res) {
      o->done = true;
      if (res.ok()) {
        o->conn = std::move(res).value();
        Outcome* raw = o.get();
        o->conn->set_drop_callback([raw](const std::string& why) { raw->dropped = why; });
      }
    });
    REQUIRE(run_until(&loop, [&] { return o->done; }));
    return o;
  };
  auto a = dial_tcp();
  REQUIRE(a->conn);
  run_for(&loop, 50ms);
  peer.send("close-all");
  REQUIRE(run_until(&loop, [&] { return !a->dropped.empty(); }));
  CHECK(a->dropped == "closed");
  auto b = dial_tcp();
  REQUIRE(b->conn);
  run_for(&loop, 50ms);
  peer.send("reset-all");
  REQUIRE(run_until(&loop, [&] { return !b->dropped.empty(); }));
  CHECK(b->dropped == "reset");
  CHECK(peer.count().tcp == 2);
}
