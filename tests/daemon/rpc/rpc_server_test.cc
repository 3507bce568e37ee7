// The socket server with real Unix sockets: framing, pipelining, half-close,
// limits, refusals, events, the socket file's life and the permission check
// against a real unprivileged process. The server runs on the test thread's
// loop; clients are blocking sockets in a thread (every read bounded).
#include <catch2/catch.hpp>

#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "rpc_test_util.h"

namespace connmgr::test {
namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;

constexpr int kNodeNotFound = static_cast<int>(ErrorCode::kNodeNotFound);

std::string req(const std::string& id, const std::string& method, const std::string& params = "") {
  std::string r = R"({"jsonrpc":"2.0","id":)" + id + R"(,"method":")" + method + '"';
  if (!params.empty()) r += R"(,"params":)" + params;
  return r + "}";
}

json parsed(const std::optional<std::string>& line) {
  if (!line) return json("(no line)");
  return json::parse(*line, nullptr, false);
}

int code_of(const json& j) {
  if (!j.is_object() || !j.contains("error")) return 0;
  return j["error"].value("code", 0);
}

TEST_CASE("two requests in one write are answered in turn") {
  RpcFixture f;
  std::vector<json> answers;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("1", "echo", R"({"n":1})") + "\n" + req("2", "echo", R"({"n":2})") + "\n");
    for (int i = 0; i < 2; ++i) answers.push_back(parsed(c.read_line()));
  });
  REQUIRE(answers.size() == 2);
  CHECK(answers[0]["result"]["n"] == 1);
  CHECK(answers[1]["result"]["n"] == 2);
}

TEST_CASE("a request sent byte by byte is served once its newline arrives") {
  RpcFixture f;
  std::optional<std::string> answer;
  f.with_client([&] {
    LineClient c(f.path());
    const std::string line = req("\"slowly\"", "echo", R"({"s":"a b\nc"})") + "\n";
    for (char ch : line) {
      c.send(std::string(1, ch));
      std::this_thread::sleep_for(200us);
    }
    answer = c.read_line();
  });
  CHECK(parsed(answer)["result"]["s"] == "a b\nc");
  CHECK(parsed(answer)["id"] == "slowly");
}

TEST_CASE("a last line ended by EOF without a newline is served, then the socket closes") {
  RpcFixture f;
  std::optional<std::string> answer;
  bool eof = false;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("1", "echo") + "\n" + req("2", "fast"));
    c.shut_wr();
    c.read_line();
    answer = c.read_line();
    eof = c.read_to_eof();
  });
  CHECK(parsed(answer)["result"] == "fast");
  CHECK(eof);
}

TEST_CASE("CRLF line ends are accepted and blank lines ignored") {
  RpcFixture f;
  std::vector<std::optional<std::string>> answers;
  f.with_client([&] {
    LineClient c(f.path());
    c.send("\r\n\n  \n" + req("1", "fast") + "\r\n\r\n" + req("2", "fast") + "\r\n");
    answers.push_back(c.read_line());
    answers.push_back(c.read_line());
  });
  CHECK(parsed(answers[0])["id"] == 1);
  CHECK(parsed(answers[1])["id"] == 2);
  CHECK(answers[0]->find('\r') == std::string::npos);
}

TEST_CASE("pipelined requests answer as they are ready: a fast one overtakes a slow one") {
  RpcFixture f;
  std::vector<json> answers;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("1", "slow", R"({"ms":300})") + "\n" + req("2", "fast") + "\n" + req("3", "slow", R"({"ms":50})") + "\n");
    for (int i = 0; i < 3; ++i) answers.push_back(parsed(c.read_line()));
  });
  REQUIRE(answers.size() == 3);
  CHECK(answers[0]["id"] == 2);
  CHECK(answers[1]["id"] == 3);
  CHECK(answers[2]["id"] == 1);
}

TEST_CASE("after the client shuts its writing side a slow answer still arrives") {
  RpcFixture f;
  std::optional<std::string> answer;
  bool eof = false;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("7", "slow", R"({"ms":700})") + "\n");
    c.shut_wr();
    answer = c.read_line();
    eof = c.read_to_eof();
  });
  CHECK(parsed(answer)["result"]["slept_ms"] == 700);
  CHECK(eof);
  CHECK(f.server().client_count() == 0);
}

TEST_CASE("ids are echoed byte for byte over the socket") {
  RpcFixture f;
  for (const std::string id : {"12345678901234567890123456789", "1.50", "-0", "\"x\"", "null"}) {
    INFO(id);
    CHECK(f.call(req(id, "fast")) == R"({"jsonrpc":"2.0","id":)" + id + R"(,"result":"fast"})");
  }
}

TEST_CASE("a notification is not answered; the next request is") {
  RpcFixture f;
  std::optional<std::string> first;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(R"({"jsonrpc":"2.0","method":"fast"})" "\n" R"({"jsonrpc":"2.0","method":"nope"})" "\n" +
           req("9", "fast") + "\n");
    first = c.read_line();
  });
  CHECK(parsed(first)["id"] == 9);
}

TEST_CASE("batches over the socket: mixed, empty, only notifications") {
  RpcFixture f;
  std::vector<std::optional<std::string>> lines;
  f.with_client([&] {
    LineClient c(f.path());
    c.send("[" + req("1", "slow", R"({"ms":50})") + "," + R"({"jsonrpc":"2.0","method":"fast"})" + ",7]\n");
    lines.push_back(c.read_line());
    c.send("[]\n");
    lines.push_back(c.read_line());
    c.send(R"([{"jsonrpc":"2.0","method":"fast"},{"jsonrpc":"2.0","method":"fast"}])" "\n" + req("2", "fast") + "\n");
    lines.push_back(c.read_line());
  });
  const json batch = parsed(lines[0]);
  REQUIRE(batch.is_array());
  REQUIRE(batch.size() == 2);
  CHECK(batch[0]["id"] == 1);
  CHECK(code_of(batch[1]) == rpc::kInvalidRequest);
  CHECK(code_of(parsed(lines[1])) == rpc::kInvalidRequest);
  CHECK(parsed(lines[1]).is_object());
  CHECK(parsed(lines[2])["id"] == 2);  // nothing came for the batch of notifications
}

TEST_CASE("each error code over the socket, and the connection keeps working") {
  RpcFixture f;
  std::vector<json> answers;
  f.with_client([&] {
    LineClient c(f.path());
    for (const std::string& line :
         {std::string("{not json"), std::string("\"\xff\xfe\""), "{\"jsonrpc\":\"2.0\",\0\"id\":1}"s,
          std::string(R"({"jsonrpc":"1.0","id":1,"method":"fast"})"), req("2", "nope"), req("3", "echo", "[1]"),
          req("4", "throw"), req("5", "missing", R"({"node_id":"n"})"), req("6", "fast")}) {
      c.send(line + "\n");
      answers.push_back(parsed(c.read_line()));
    }
  });
  REQUIRE(answers.size() == 9);
  CHECK(code_of(answers[0]) == rpc::kParseError);
  CHECK(code_of(answers[1]) == rpc::kParseError);  // invalid UTF-8
  CHECK(code_of(answers[2]) == rpc::kParseError);  // NUL byte
  CHECK(code_of(answers[3]) == rpc::kInvalidRequest);
  CHECK(code_of(answers[4]) == rpc::kMethodNotFound);
  CHECK(code_of(answers[5]) == rpc::kInvalidParams);
  CHECK(code_of(answers[6]) == rpc::kInternalError);
  CHECK(code_of(answers[7]) == kNodeNotFound);
  CHECK(answers[7]["error"]["data"]["node_id"] == "n");
  CHECK(answers[8]["result"] == "fast");
}

TEST_CASE("a line holding a NUL byte is read whole: a parse error, not the value before the NUL") {
  RpcFixture f;
  std::vector<json> answers;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("1", "fast") + "\0garbage\n"s + "123\0\n"s + req("2", "fast") + "\n");
    for (int i = 0; i < 3; ++i) answers.push_back(parsed(c.read_line()));
  });
  REQUIRE(answers.size() == 3);
  CHECK(code_of(answers[0]) == rpc::kParseError);
  CHECK(answers[0]["id"].is_null());
  CHECK(code_of(answers[1]) == rpc::kParseError);
  CHECK(answers[2]["result"] == "fast");
}

TEST_CASE("JSON nested 65 deep is an invalid request and the connection goes on") {
  RpcFixture f;
  std::vector<json> answers;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(std::string(65, '[') + std::string(65, ']') + "\n" + req("1", "fast") + "\n");
    answers.push_back(parsed(c.read_line()));
    answers.push_back(parsed(c.read_line()));
  });
  CHECK(code_of(answers[0]) == rpc::kInvalidRequest);
  CHECK(answers[1]["result"] == "fast");
}

TEST_CASE("a line over max_request_bytes gets an invalid request and the connection is closed") {
  server::ServerLimits limits;
  limits.max_request_bytes = 1000;
  RpcFixture f(limits);
  SECTION("a whole line") {
    std::optional<std::string> answer;
    bool ended = false;
    std::optional<std::string> good;
    f.with_client([&] {
      LineClient c(f.path());
      c.send(req("1", "fast") + "\n" + req("2", "echo", "{\"s\":\"" + std::string(1000, 'a') + "\"}") +
             "\n" + req("3", "fast") + "\n");
      good = c.read_line();
      answer = c.read_line();
      ended = c.read_to_eof();
    });
    CHECK(parsed(good)["id"] == 1);
    CHECK(code_of(parsed(answer)) == rpc::kInvalidRequest);
    CHECK(parsed(answer)["id"].is_null());
    CHECK(ended);
  }
  SECTION("a line still growing without its newline") {
    std::optional<std::string> answer;
    bool ended = false;
    f.with_client([&] {
      LineClient c(f.path());
      c.send(std::string(600, ' '));
      c.send(std::string(600, ' '));
      answer = c.read_line();
      ended = c.read_to_eof();
    });
    CHECK(code_of(parsed(answer)) == rpc::kInvalidRequest);
    CHECK(ended);
  }
  SECTION("a line of exactly the limit is served") {
    std::string line = req("1", "echo", "{\"s\":\"\"}");
    line.insert(line.size() - 3, std::string(1000 - line.size(), 'b'));
    REQUIRE(line.size() == 1000);
    CHECK(parsed(f.call(line))["id"] == 1);
  }
  run_until(f.loop(), [&] { return f.server().client_count() == 0; }, 5s);
  CHECK(f.server().client_count() == 0);
}

TEST_CASE("a line left unfinished past partial_request_timeout is cut") {
  server::ServerLimits limits;
  limits.partial_request_timeout = 200ms;
  RpcFixture f(limits);
  std::optional<std::string> answer;
  bool ended = false;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("1", "fast") + "\n" + R"({"jsonrpc":"2.0",)");
    c.read_line();
    answer = c.read_line();
    ended = c.read_to_eof();
  });
  CHECK(code_of(parsed(answer)) == rpc::kInvalidRequest);
  CHECK(parsed(answer)["error"]["message"].get<std::string>().find("unfinished") != std::string::npos);
  CHECK(ended);
}

TEST_CASE("the client past max_clients gets an error line and is closed; the others go on") {
  server::ServerLimits limits;
  limits.max_clients = 2;
  RpcFixture f(limits);
  std::optional<std::string> refused, served;
  bool ended = false;
  f.with_client([&] {
    LineClient a(f.path()), b(f.path());
    a.send(req("1", "fast") + "\n");
    b.send(req("1", "fast") + "\n");
    a.read_line();
    b.read_line();  // both are in
    LineClient c(f.path());
    refused = c.read_line();
    ended = c.read_to_eof();
    a.send(req("2", "fast") + "\n");
    served = a.read_line();
  });
  const json r = parsed(refused);
  CHECK(code_of(r) == rpc::kInternalError);
  CHECK(r["id"].is_null());
  CHECK(r["error"]["message"].get<std::string>().find("too many clients") != std::string::npos);
  CHECK(ended);
  CHECK(parsed(served)["id"] == 2);
}

TEST_CASE("a client that does not read its answers is cut off at max_output_bytes") {
  server::ServerLimits limits;
  limits.max_output_bytes = 256 * 1024;
  RpcFixture f(limits);
  LineClient c(f.path());
  REQUIRE(run_until(f.loop(), [&] { return f.server().client_count() == 1; }, 5s));
  // 400 answers of 10 kB: 4 MB, far past the limit plus the socket's buffers.
  // The requests themselves are small enough to be sent without blocking.
  std::string batch;
  for (int i = 0; i < 400; ++i) batch += req(std::to_string(i), "big", R"({"size":10000})") + "\n";
  REQUIRE(c.send(batch));
  CHECK(run_until(f.loop(), [&] { return f.server().client_count() == 0; }, 10s));
  std::string arrived;
  CHECK(c.read_to_eof(&arrived));
  CHECK(arrived.size() < 400 * 10000);
  // The server goes on serving others.
  CHECK(parsed(f.call(req("1", "fast")))["result"] == "fast");
}

TEST_CASE("a session destroyed with a write under way leaves the write to free itself") {
  // The answer (4 MB) outgrows the socket's buffers, so a uv_write is under
  // way when the server and its sessions go; libuv then cancels the write
  // and its callback, finding no session, frees the request and its bytes
  // (ASan and LSan runs check both).
  auto f = std::make_unique<RpcFixture>();
  LineClient c(f->path());
  REQUIRE(c.send(req("1", "big", R"({"size":4000000})") + "\n"));
  run_for(f->loop(), 200ms);
  CHECK(f->server().client_count() == 1);
  f.reset();
  std::string arrived;
  CHECK(c.read_to_eof(&arrived));
  CHECK(arrived.size() < 4000000);
}

TEST_CASE("notifications reach a session with many pipelined requests") {
  RpcFixture f;
  int answers = 0, ticks = 0, other = 0;
  f.with_client([&] {
    LineClient c(f.path());
    std::string all;
    for (int i = 0; i < 200; ++i) all += req(std::to_string(i), "notify", R"({"count":3})") + "\n";
    c.send(all);
    while (answers < 200) {
      const json j = parsed(c.read_line());
      if (j.is_object() && j.contains("result")) ++answers;
      else if (j.is_object() && j.value("method", "") == "tick") ++ticks;
      else if (++other > 0) break;
    }
  });
  CHECK(answers == 200);
  CHECK(ticks == 600);
  CHECK(other == 0);
}

TEST_CASE("client_count follows clients coming and going") {
  RpcFixture f;
  auto a = std::make_unique<LineClient>(f.path());
  auto b = std::make_unique<LineClient>(f.path());
  CHECK(run_until(f.loop(), [&] { return f.server().client_count() == 2; }, 5s));
  a.reset();
  CHECK(run_until(f.loop(), [&] { return f.server().client_count() == 1; }, 5s));
  b.reset();
  CHECK(run_until(f.loop(), [&] { return f.server().client_count() == 0; }, 5s));
  CHECK(f.server().accepted_total() == 2);
}

TEST_CASE("a client that vanishes with an answer owed does not disturb another") {
  RpcFixture f;
  {
    LineClient gone(f.path());
    gone.send(req("1", "slow", R"({"ms":100})") + "\n" + req("2", "big", R"({"size":1000000})") + "\n");
    run_for(f.loop(), 20ms);
  }
  std::optional<std::string> answer;
  f.with_client([&] {
    LineClient c(f.path());
    c.send(req("3", "slow", R"({"ms":150})") + "\n");
    answer = c.read_line();
  });
  CHECK(parsed(answer)["id"] == 3);
}

TEST_CASE("a stale socket file is replaced; a live one refuses a second server") {
  TempDir dir;
  const std::string path = dir.file("s.sock");
  uv_loop_t loop;
  uv_loop_init(&loop);
  rpc::Dispatcher d(rpc::process_access_policy(std::nullopt));
  {
    // A socket file nobody listens on any more.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
  }
  {
    server::SocketServer first(&loop, d);
    const Status s1 = first.listen_path(path, 0640, std::nullopt);
    REQUIRE(s1.ok());
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);

    server::SocketServer second(&loop, d);
    const Status s2 = second.listen_path(path, 0640, std::nullopt);
    CHECK_FALSE(s2.ok());
    CHECK(s2.message() == "another connmgrd is serving " + path + "; refusing to start a second one");
    CHECK(::stat(path.c_str(), &st) == 0);  // the live one's file is untouched
    LineClient c(path);
    CHECK(c.connected());
  }
  // The server removed its file on the way out.
  struct stat st {};
  CHECK(::stat(path.c_str(), &st) != 0);
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("a socket path longer than sun_path holds is refused with a clear error") {
  TempDir dir;
  uv_loop_t loop;
  uv_loop_init(&loop);
  rpc::Dispatcher d(rpc::process_access_policy(std::nullopt));
  {
    server::SocketServer s(&loop, d);
    const std::string path = dir.path() + "/" + std::string(120, 'p') + ".sock";
    const Status st = s.listen_path(path, 0660, std::nullopt);
    CHECK_FALSE(st.ok());
    CHECK(st.message().find("over the limit of 107") != std::string::npos);
    // Nothing was created under a truncated name either.
    CHECK(::access((dir.path() + "/" + std::string(120, 'p')).substr(0, 107).c_str(), F_OK) != 0);
    const Status not_socket = [&] {
      std::ofstream(dir.file("plain")) << "x";
      return s.listen_path(dir.file("plain"), 0660, std::nullopt);
    }();
    CHECK_FALSE(not_socket.ok());
    CHECK(not_socket.message().find("is not a socket") != std::string::npos);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("a listening socket passed in (socket activation) is served") {
  TempDir dir;
  const std::string path = dir.file("act.sock");
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  rpc::Dispatcher d(rpc::process_access_policy(std::nullopt));
  d.add({"fast", false, [](const json&, const rpc::CallContext&, rpc::Reply r) { r.result(1); }});
  {
    server::SocketServer s(&loop, d);
    REQUIRE(s.listen_fd(fd).ok());
    std::optional<std::string> answer;
    REQUIRE(run_client(&loop, [&] {
      LineClient c(path);
      c.send(req("1", "fast") + "\n");
      answer = c.read_line();
    }));
    CHECK(parsed(answer)["result"] == 1);
    // A descriptor that is not listening is refused.
    int plain = ::socket(AF_UNIX, SOCK_STREAM, 0);
    server::SocketServer t(&loop, d);
    CHECK_FALSE(t.listen_fd(plain).ok());
  }
  for (int i = 0; i < 100 && uv_run(&loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("a graceful stop: no new clients, queued answers flushed, clients closed") {
  RpcFixture f;
  std::optional<std::string> answer;
  bool ended = false;
  std::atomic<bool> asked{false};
  std::thread t([&] {
    LineClient c(f.path());
    c.send(req("1", "fast") + "\n");
    answer = c.read_line();
    asked = true;
    ended = c.read_to_eof();
  });
  REQUIRE(run_until(f.loop(), [&] { return asked.load(); }, 10s));
  f.server().stop_listening();
  CHECK_FALSE(LineClient(f.path()).connected());
  f.server().close_clients();
  run_until(f.loop(), [&] { return f.server().client_count() == 0; }, 10s);
  t.join();
  CHECK(parsed(answer)["id"] == 1);
  CHECK(ended);
  CHECK(f.server().client_count() == 0);
}

// Forks a child that drops to uid/gid 65534 (and the given supplementary
// groups) and sends `line`; returns the answer line it read.
std::string call_as_nobody(RpcFixture& f, const std::string& line, std::vector<gid_t> groups) {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(out[0]);
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(65534) != 0 ||
        ::setuid(65534) != 0)
      ::_exit(3);
    LineClient c(f.path(), 5s);
    if (!c.connected()) ::_exit(4);
    c.send(line + "\n");
    const auto a = c.read_line();
    if (!a) ::_exit(5);
    const std::string text = *a + "\n";
    if (::write(out[1], text.data(), text.size()) != static_cast<ssize_t>(text.size())) ::_exit(6);
    ::_exit(0);
  }
  ::close(out[1]);
  int status = -1;
  run_until(f.loop(), [&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 15s);
  if (status == -1) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  INFO("child status " << status);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return got.empty() ? got : got.substr(0, got.size() - 1);
}

TEST_CASE("a caller who is not root, the daemon's user or an admin gets permission denied for a state change") {
  if (::geteuid() != 0) {
    WARN("not root: cannot switch to an unprivileged user here");
    return;
  }
  SECTION("no admin group") {
    RpcFixture f;
    const json a = parsed(call_as_nobody(f, req("1", "change"), {}));
    CHECK(code_of(a) == rpc::kPermissionDenied);
    CHECK(a["error"]["message"].get<std::string>().find("uid 65534") != std::string::npos);
    CHECK(a["error"]["data"]["method"] == "change");
    // Reading stays open to it; root (this process) may change state.
    CHECK(parsed(call_as_nobody(f, req("2", "fast"), {}))["result"] == "fast");
    CHECK(parsed(f.call(req("3", "change")))["result"] == "changed");
  }
  SECTION("admin group among the caller's supplementary groups") {
    RpcFixture f({}, gid_t{4242});
    CHECK(parsed(call_as_nobody(f, req("1", "change"), {4242}))["result"] == "changed");
    const json a = parsed(call_as_nobody(f, req("2", "change"), {4243}));
    CHECK(code_of(a) == rpc::kPermissionDenied);
    CHECK(a["error"]["message"].get<std::string>().find("admin group 4242") != std::string::npos);
  }
  SECTION("admin group as the caller's primary group") {
    RpcFixture f({}, gid_t{65534});
    CHECK(parsed(call_as_nobody(f, req("1", "change"), {}))["result"] == "changed");
  }
}

TEST_CASE("running out of descriptors pauses accepting instead of spinning, then resumes") {
  RpcFixture f;
  // Client sockets are made first; connect() then needs no descriptor.
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval tv{5, 0};
    ::setsockopt(clients.back(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  // The lowest free descriptor: with the soft limit there, accept() fails.
  const int lowest = ::dup(0);
  ::close(lowest);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(lowest);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, f.path().c_str());
  for (int fd : clients) CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  run_for(f.loop(), 1000ms);
  const uint64_t pauses = f.server().accept_pauses();
  const size_t during = f.server().client_count();
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
  // About one pause per accept_pause (100 ms); a spinning loop would count thousands.
  CHECK(pauses >= 1);
  CHECK(pauses <= 20);
  CHECK(during == 0);
  CHECK(run_until(f.loop(), [&] { return f.server().client_count() == 4; }, 5s));
  std::string answer;
  REQUIRE(run_client(f.loop(), [&] {
    const std::string line = req("1", "fast") + "\n";
    if (::send(clients[0], line.data(), line.size(), MSG_NOSIGNAL) < 0) return;
    char buf[256];
    const ssize_t n = ::recv(clients[0], buf, sizeof buf, 0);
    if (n > 0) answer.assign(buf, static_cast<size_t>(n));
  }));
  CHECK(answer == R"({"jsonrpc":"2.0","id":1,"result":"fast"})" "\n");
  for (int fd : clients) ::close(fd);
}

}  // namespace
}  // namespace connmgr::test
