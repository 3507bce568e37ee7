#include "rpc_test_util.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

namespace connmgr::test {

namespace {
constexpr int kNodeNotFound = static_cast<int>(ErrorCode::kNodeNotFound);
}  // namespace

LineClient::LineClient(const std::string& path, std::chrono::milliseconds timeout) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

LineClient::~LineClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool LineClient::send(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

void LineClient::shut_wr() { ::shutdown(fd_, SHUT_WR); }

std::optional<std::string> LineClient::read_line() {
  for (;;) {
    const size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      last_error_ = n == 0 ? 0 : errno;
      return std::nullopt;
    }
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

bool LineClient::read_to_eof(std::string* rest) {
  for (;;) {
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      last_error_ = 0;
      if (rest) *rest = std::move(buf_);
      buf_.clear();
      return true;
    }
    if (n < 0) {
      last_error_ = errno;
      if (rest) *rest = std::move(buf_);
      buf_.clear();
      // A peer that closed with our bytes unread resets the socket (Linux
      // AF_UNIX): that is an end too.
      return errno == ECONNRESET;
    }
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

bool run_client(uv_loop_t* loop, const std::function<void()>& client,
                std::chrono::milliseconds limit) {
  std::atomic<bool> done{false};
  std::thread t([&] {
    client();
    done = true;
  });
  const bool finished = run_until(loop, [&] { return done.load(); }, limit);
  if (!finished) {
    // Keep serving so that the client's reads end by their timeouts.
    run_until(loop, [&] { return done.load(); }, std::chrono::seconds(30));
  }
  t.join();
  return finished;
}

ReachableTempDir::ReachableTempDir() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string tmpl = (base / "connmgr-rpc-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp " + tmpl + ": " + strerror(errno));
  path_ = tmpl;
  // mkdtemp makes it 0700; other users must be able to pass through it.
  if (::chmod(path_.c_str(), 0755) != 0) throw std::runtime_error("chmod " + path_ + ": " + strerror(errno));
}

ReachableTempDir::~ReachableTempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// A "slow" call: its reply and the timer that answers it.
struct RpcFixture::SlowTimer {
  Timer timer;
  rpc::Reply reply;
  int ms = 0;
};

RpcFixture::RpcFixture(server::ServerLimits limits, std::optional<gid_t> admin_gid)
    : dispatcher_(rpc::process_access_policy(admin_gid)) {
  uv_loop_init(&loop_);
  path_ = dir_.file("rpc.sock");

  dispatcher_.add({"echo", false, [](const json& p, const rpc::CallContext&, rpc::Reply r) {
                     r.result(p);
                   }});
  dispatcher_.add({"fast", false, [](const json&, const rpc::CallContext&, rpc::Reply r) {
                     r.result("fast");
                   }});
  dispatcher_.add({"slow", false, [this](const json& p, const rpc::CallContext&, rpc::Reply r) {
                     auto* t = timers_.emplace_back(std::make_unique<SlowTimer>()).get();
                     t->reply = std::move(r);
                     t->ms = p.value("ms", 100);
                     t->timer.init(&loop_);
                     t->timer.start(static_cast<uint64_t>(t->ms), [this, t] {
                       t->reply.result(json{{"slept_ms", t->ms}});
                       // Destroys the Timer whose callback this is: allowed.
                       std::erase_if(timers_, [t](const auto& each) { return each.get() == t; });
                     });
                   }});
  dispatcher_.add({"throw", false, [](const json&, const rpc::CallContext&, rpc::Reply) {
                     throw std::runtime_error("boom");
                   }});
  dispatcher_.add({"silent", false, [](const json&, const rpc::CallContext&, rpc::Reply) {}});
  dispatcher_.add({"change", true, [](const json&, const rpc::CallContext&, rpc::Reply r) {
                     r.result("changed");
                   }});
  dispatcher_.add({"big", false, [](const json& p, const rpc::CallContext&, rpc::Reply r) {
                     r.result(std::string(p.value("size", size_t{1000}), 'x'));
                   }});
  dispatcher_.add({"notify", false, [](const json& p, const rpc::CallContext& ctx, rpc::Reply r) {
                     const int count = p.value("count", 1);
                     for (int i = 0; i < count; ++i)
                       ctx.session->notify(
                           json{{"jsonrpc", "2.0"}, {"method", "tick"}, {"params", {{"n", i}}}});
                     r.result("done");
                   }});
  dispatcher_.add({"missing", false, [](const json& p, const rpc::CallContext&, rpc::Reply r) {
                     r.error(rpc::RpcError{kNodeNotFound, "node not found",
                                           json{{"node_id", p.value("node_id", "")}}});
                   }});

  server_ = std::make_unique<server::SocketServer>(&loop_, dispatcher_, limits);
  const Status s = server_->listen_path(path_, 0666, std::nullopt);
  if (!s.ok()) throw std::runtime_error("listen: " + s.message());
}

RpcFixture::~RpcFixture() {
  server_.reset();
  // Slow calls still running: their replies go to closed sessions.
  timers_.clear();
  for (int i = 0; i < 1000 && uv_run(&loop_, UV_RUN_NOWAIT) != 0; ++i) {
  }
  uv_run(&loop_, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop_) != 0) {
    drain_loop(&loop_);
    uv_loop_close(&loop_);
  }
}

void RpcFixture::with_client(const std::function<void()>& client, std::chrono::milliseconds limit) {
  REQUIRE(run_client(&loop_, client, limit));
}

std::string RpcFixture::call(const std::string& line) {
  std::string answer = "(no answer)";
  with_client([&] {
    LineClient c(path_);
    if (!c.connected()) return;
    c.send(line + "\n");
    if (auto a = c.read_line()) answer = *a;
  });
  return answer;
}

}  // namespace connmgr::test
