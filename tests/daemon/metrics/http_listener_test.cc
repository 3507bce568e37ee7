#include "metrics/http_listener.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "http_test_client.h"
#include "metrics/process_stats.h"

using namespace connmgr;
using namespace connmgr::metrics;
using connmgr::test::Loop;
using connmgr::test::Response;
using connmgr::test::closed_by_server;
using connmgr::test::connect_to;
using connmgr::test::fetch;
using connmgr::test::get_request;
using connmgr::test::open_fd_count;
using connmgr::test::read_response;
using connmgr::test::send_all;
using connmgr::test::while_serving;
using namespace std::chrono_literals;

namespace {

std::string sample_body(Format format) {
  Exposition out(format);
  out.family("connmgr_dials", Type::kCounter, "Dials ended.");
  out.sample({{"protocol", "tcp"}, {"result", "success"}}, uint64_t{3});
  Result<ProcessStats> stats = read_process_stats();
  if (stats) write_process_metrics(out, *stats);
  return out.finish();
}

std::unique_ptr<MetricsHttpListener> start_listener(uv_loop_t* loop, HttpListenerOptions options = {},
                                                    MetricsHttpListener::Render render = sample_body) {
  if (options.address.empty()) options.address = "127.0.0.1:0";
  auto listener = MetricsHttpListener::start(loop, options, std::move(render));
  if (!listener) FAIL(listener.error().message());
  return std::move(listener).value();
}

}  // namespace

TEST_CASE("listen addresses are numeric IPv4:port or [IPv6]:port", "[metrics][http]") {
  auto v4 = parse_listen_address("127.0.0.1:9469");
  REQUIRE(v4.ok());
  CHECK(v4->ss_family == AF_INET);
  CHECK(ntohs(reinterpret_cast<const sockaddr_in*>(&*v4)->sin_port) == 9469);
  auto v6 = parse_listen_address("[::1]:0");
  REQUIRE(v6.ok());
  CHECK(v6->ss_family == AF_INET6);
  for (const char* bad : {"localhost:9469", "127.0.0.1", "::1:9469", "[::1]", "127.0.0.1:65536",
                          "127.0.0.1:-1", "127.0.0.1:94x", "[localhost]:1", ":9469", "1.2.3:80"}) {
    INFO(bad);
    auto parsed = parse_listen_address(bad);
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error().code() == ErrorCode::kInvalidParams);
    CHECK(parsed.error().message().find("give an IP address") != std::string::npos);
  }
}

TEST_CASE("GET /metrics answers the rendered text format on 127.0.0.1 and ::1", "[metrics][http]") {
  Loop loop;
  for (bool ipv6 : {false, true}) {
    INFO("ipv6 " << ipv6);
    std::vector<Format> asked;
    auto listener = start_listener(loop.get(), {ipv6 ? "[::1]:0" : "127.0.0.1:0"}, [&](Format f) {
      asked.push_back(f);
      return sample_body(f);
    });
    REQUIRE(listener->port() != 0);
    Response r = fetch(loop.get(), listener->port(), get_request("/metrics?debug=1"), ipv6);
    CHECK(r.status == 200);
    CHECK(r.header("Content-Type") == std::string(kTextContentType));
    CHECK(r.body.rfind("# HELP connmgr_dials_total Dials ended.\n", 0) == 0);
    CHECK(r.header("Server").empty());
    CHECK(asked == std::vector<Format>{Format::kText});
  }
}

TEST_CASE("Accept: application/openmetrics-text gets OpenMetrics 1.0", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  Response r = fetch(loop.get(), listener->port(),
                     get_request("/metrics", "Accept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5\r\n"));
  CHECK(r.status == 200);
  CHECK(r.header("Content-Type") == std::string(kOpenMetricsContentType));
  CHECK(r.body.size() > 6);
  CHECK(r.body.substr(r.body.size() - 6) == "# EOF\n");
}

TEST_CASE("HEAD /metrics answers the head without the body", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  Response r = fetch(loop.get(), listener->port(), "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     false, true);
  CHECK(r.status == 200);
  CHECK(r.header("Content-Type") == std::string(kTextContentType));
  CHECK(r.body.empty());
}

TEST_CASE("other paths, methods and requests with a body get 404, 405 and 413", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  const uint16_t port = listener->port();
  CHECK(fetch(loop.get(), port, get_request("/")).status == 404);
  CHECK(fetch(loop.get(), port, get_request("/metrics/")).status == 404);
  CHECK(fetch(loop.get(), port, get_request("/metricsx")).status == 404);
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
    INFO(method);
    Response r = fetch(loop.get(), port, std::string(method) + " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    CHECK(r.status == 405);
    CHECK(r.header("Allow") == "GET, HEAD");
  }
  SECTION("a GET with a body is refused unread and the connection closed") {
    auto closed = while_serving(loop.get(), [port] {
      const int fd = connect_to(port);
      send_all(fd, get_request("/metrics", "Content-Length: 5\r\n") + "hello");
      Response r = read_response(fd);
      const bool eof = closed_by_server(fd);
      close(fd);
      return std::make_pair(r.status, eof);
    });
    CHECK(closed.first == 413);
    CHECK(closed.second);
  }
  SECTION("a chunked body too") {
    Response r = fetch(loop.get(), port, get_request("/metrics", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n0\r\n\r\n");
    CHECK(r.status == 413);
  }
}

TEST_CASE("a head over max_request_bytes gets 431 (414 for a long request line) and a close", "[metrics][http]") {
  Loop loop;
  HttpListenerOptions options;
  options.max_request_bytes = 8192;
  auto listener = start_listener(loop.get(), options);
  const uint16_t port = listener->port();
  // What libmicrohttpd 0.9.75 does with a head bigger than the connection's
  // memory pool: 431 Request Header Fields Too Large, then close.
  auto seen = while_serving(loop.get(), [port] {
    const int fd = connect_to(port);
    send_all(fd, get_request("/metrics", "X-Padding: " + std::string(9000, 'a') + "\r\n"));
    Response r = read_response(fd);
    const bool eof = closed_by_server(fd);
    close(fd);
    return std::make_pair(r.status, eof);
  });
  CHECK(seen.first == 431);
  CHECK(seen.second);
  // Just under the limit (measured with 0.9.75 and a 8192-byte pool: heads
  // up to ~7,850 bytes served, then up to ~8,100 a close without an answer,
  // as no room is left in the pool for the answer's head): refused at once,
  // never left hanging.
  auto near = while_serving(loop.get(), [port] {
    const int fd = connect_to(port);
    send_all(fd, get_request("/metrics", "X-Padding: " + std::string(8000, 'a') + "\r\n"));
    const auto start = std::chrono::steady_clock::now();
    Response r = read_response(fd);
    const bool eof = r.status == 0 || closed_by_server(fd);
    close(fd);
    return std::make_tuple(r.status, eof, std::chrono::steady_clock::now() - start);
  });
  CHECK((std::get<0>(near) == 0 || std::get<0>(near) == 431));
  CHECK(std::get<1>(near));
  CHECK(std::get<2>(near) < 2s);
  // A request line alone over the limit.
  CHECK(fetch(loop.get(), port, get_request("/metrics?" + std::string(9000, 'q'))).status == 414);
  // A head well inside the limit is still served.
  CHECK(fetch(loop.get(), port, get_request("/metrics", "X-Padding: " + std::string(2000, 'a') + "\r\n")).status == 200);
}

TEST_CASE("two requests on one keep-alive connection are both answered", "[metrics][http]") {
  Loop loop;
  int renders = 0;
  auto listener = start_listener(loop.get(), {}, [&](Format f) {
    ++renders;
    return sample_body(f);
  });
  const uint16_t port = listener->port();
  auto statuses = while_serving(loop.get(), [port] {
    const int fd = connect_to(port);
    send_all(fd, get_request());
    const Response first = read_response(fd);
    send_all(fd, get_request());
    const int second = read_response(fd).status;
    close(fd);
    return std::make_tuple(first.status, first.header("Connection"), second);
  });
  CHECK(std::get<0>(statuses) == 200);
  CHECK(std::get<1>(statuses) != "close");
  CHECK(std::get<2>(statuses) == 200);
  CHECK(renders == 2);
}

TEST_CASE("a request sent a byte at a time stalls neither the loop nor other clients", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  const uint16_t port = listener->port();
  int ticks = 0;
  Timer tick(loop.get());
  tick.start(5, [&] { ++ticks; }, 5);
  std::atomic<int> other_status{0};
  auto slow = while_serving(loop.get(), [&, port] {
    const int fd = connect_to(port);
    const std::string request = get_request();
    for (char c : request) {
      send_all(fd, std::string(1, c));
      std::this_thread::sleep_for(5ms);
      if (c == '\n' && other_status == 0) {
        // Meanwhile another client is served at once.
        const int other = connect_to(port);
        send_all(other, get_request());
        other_status = read_response(other).status;
        close(other);
      }
    }
    Response r = read_response(fd);
    close(fd);
    return r.status;
  });
  CHECK(slow == 200);
  CHECK(other_status == 200);
  // ~40 bytes at 5 ms each: the 5 ms timer kept firing all along.
  CHECK(ticks >= 10);
}

TEST_CASE("a client that never sends is dropped after the timeout", "[metrics][http]") {
  Loop loop;
  HttpListenerOptions options;
  options.timeout = 1s;
  auto listener = start_listener(loop.get(), options);
  const uint16_t port = listener->port();
  auto waited = while_serving(loop.get(), [port] {
    const int fd = connect_to(port);
    const auto start = std::chrono::steady_clock::now();
    const bool closed = closed_by_server(fd);
    close(fd);
    return std::make_pair(closed, std::chrono::steady_clock::now() - start);
  });
  CHECK(waited.first);
  CHECK(waited.second >= 900ms);
  CHECK(waited.second < 5s);
}

TEST_CASE("beyond max_clients a connection waits; those accepted are still served", "[metrics][http]") {
  Loop loop;
  HttpListenerOptions options;
  options.max_clients = 2;
  auto listener = start_listener(loop.get(), options);
  const uint16_t port = listener->port();
  const int a = connect_to(port);
  const int b = connect_to(port);
  test::run_for(loop.get(), 100ms);
  // The third: the kernel completes its handshake (listen backlog) but
  // libmicrohttpd does not accept it while two are open.
  const int c = connect_to(port);
  REQUIRE(c >= 0);
  send_all(c, get_request());
  // Waiting at the limit costs no CPU: libmicrohttpd takes its listening
  // socket out of its epoll set meanwhile (no wake-up per loop turn).
  const double cpu_before = read_process_stats()->cpu_seconds;
  test::run_for(loop.get(), 300ms);
  CHECK(read_process_stats()->cpu_seconds - cpu_before < 0.1);
  timeval brief{0, 200000};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof brief);
  CHECK(read_response(c).status == 0);  // no answer yet
  // The two accepted are served meanwhile.
  const int status_a = while_serving(loop.get(), [a] {
    send_all(a, get_request());
    return read_response(a).status;
  });
  CHECK(status_a == 200);
  // One leaves: the waiting one is accepted and served.
  close(a);
  timeval patient{10, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &patient, sizeof patient);
  const int status_c = while_serving(loop.get(), [c] { return read_response(c).status; });
  CHECK(status_c == 200);
  close(b);
  close(c);
}

TEST_CASE("100 connections opened and closed leave no descriptor behind", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  const uint16_t port = listener->port();
  CHECK(fetch(loop.get(), port, get_request()).status == 200);  // warm up
  test::run_for(loop.get(), 50ms);
  const size_t before = open_fd_count();
  while_serving(loop.get(), [port] {
    for (int i = 0; i < 100; ++i) {
      const int fd = connect_to(port);
      if (i % 2 == 0) {
        send_all(fd, get_request("/metrics", "Connection: close\r\n"));
        read_response(fd);
      }
      close(fd);
    }
    return 0;
  });
  // The server sees every close within a few loop turns.
  CHECK(test::run_until(loop.get(), [&] { return open_fd_count() == before; }, 5s));
  CHECK(open_fd_count() == before);
}

TEST_CASE("destroying the listener with clients connected closes them", "[metrics][http]") {
  Loop loop;
  const size_t before = open_fd_count();
  auto listener = start_listener(loop.get());
  const uint16_t port = listener->port();
  const int idle = connect_to(port);
  const int partial = connect_to(port);
  send_all(partial, "GET /metr");
  test::run_for(loop.get(), 100ms);
  listener.reset();
  test::run_for(loop.get(), 20ms);
  CHECK(closed_by_server(idle));
  CHECK(closed_by_server(partial));
  close(idle);
  close(partial);
  CHECK(open_fd_count() == before);
  CHECK(connect_to(port) == -1);  // no longer listening
}

TEST_CASE("a port in use is a clear error naming the address", "[metrics][http]") {
  Loop loop;
  auto first = start_listener(loop.get());
  const std::string address = "127.0.0.1:" + std::to_string(first->port());
  auto second = MetricsHttpListener::start(loop.get(), {address}, sample_body);
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().message().find(address) != std::string::npos);
  CHECK(second.error().message().find("in use") != std::string::npos);
  auto named = MetricsHttpListener::start(loop.get(), {"localhost:0"}, sample_body);
  REQUIRE_FALSE(named.ok());
  CHECK(named.error().message().find("give an IP address") != std::string::npos);
}

TEST_CASE("Python's urllib fetches /metrics in both formats", "[metrics][http]") {
  Loop loop;
  auto listener = start_listener(loop.get());
  const std::string url = "http://127.0.0.1:" + std::to_string(listener->port()) + "/metrics";
  const std::string script =
      "import sys, urllib.request\n"
      "for accept in ('*/*', 'application/openmetrics-text'):\n"
      "    r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={'Accept': accept}), timeout=10)\n"
      "    body = r.read().decode()\n"
      "    print(r.status, r.headers['Content-Type'], body.endswith('# EOF\\n'), 'process_open_fds' in body)\n"
      "try:\n"
      "    urllib.request.urlopen(sys.argv[1] + 'x', timeout=10)\n"
      "except urllib.error.HTTPError as e:\n"
      "    print(e.code)\n";
  auto lines = while_serving(loop.get(), [&] {
    test::ChildProcess python({"/usr/bin/python3", "-c", script, url});
    std::vector<std::string> out;
    for (int i = 0; i < 3; ++i) out.push_back(python.read_line(15000));
    python.wait_exit();
    return out;
  });
  CHECK(lines[0] == "200 " + std::string(kTextContentType) + " False True");
  CHECK(lines[1] == "200 " + std::string(kOpenMetricsContentType) + " True True");
  CHECK(lines[2] == "404");
}

TEST_CASE("promtool accepts the body the listener serves", "[metrics][http]") {
  if (access("/usr/bin/promtool", X_OK) != 0) {
    WARN("skipped: /usr/bin/promtool is absent (Debian package prometheus)");
    return;
  }
  Loop loop;
  auto listener = start_listener(loop.get());
  Response r = fetch(loop.get(), listener->port(), get_request());
  REQUIRE(r.status == 200);
  test::TempDir dir;
  const std::string path = dir.file("scrape.prom");
  FILE* f = std::fopen(path.c_str(), "w");
  std::fwrite(r.body.data(), 1, r.body.size(), f);
  std::fclose(f);
  const std::string command = "/usr/bin/promtool check metrics < " + path + " 2>&1";
  FILE* p = popen(command.c_str(), "r");
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  INFO(out);
  CHECK(status == 0);
  CHECK(out.empty());
}
