// ConnectionManager::open_stream and the streams of a link, against real
// parts: a real SQLite file, the real TcpConnector, and an echo listener on
// 127.0.0.1 driven by the test's loop (a TCP link's streams are connections
// of their own to the same endpoint, so the listener sees the link first,
// then one connection per stream).
#include <sqlite3.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "core/connection_manager.h"
#include "net/tcp_connector.h"
#include "test_support.h"
#include "util/uv_handle.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_for;
using connmgr::test::run_until;
using connmgr::test::TempDir;

namespace {

// Echoes every byte it reads and answers a FIN with its own. Keeps every
// connection it accepted, in order, so a test can reset one (the first is
// the node's link).
class EchoListener {
 public:
  explicit EchoListener(uv_loop_t* loop) : loop_(loop) {
    REQUIRE(server_.init(loop, this, uv_tcp_init) == 0);
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    REQUIRE(uv_tcp_bind(server_.get(), reinterpret_cast<const sockaddr*>(&addr), 0) == 0);
    REQUIRE(uv_listen(server_.as_stream(), 64, &EchoListener::on_connection) == 0);
    sockaddr_in bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(server_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(bound.sin_port);
  }

  int port() const { return port_; }
  size_t accepted() const { return peers_.size(); }
  void stop() { server_.close(); }  // later dials are refused
  // RST on the i-th accepted connection (0: the link).
  void reset(size_t i) {
    uv_os_fd_t fd;
    if (uv_fileno(peers_.at(i)->socket.as_handle(), &fd) == 0) {
      linger lg{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    peers_.at(i)->socket.close();
  }
  // Whether the i-th connection saw the other side's FIN or RST.
  bool ended(size_t i) const { return peers_.at(i)->ended; }

 private:
  struct Peer {
    UvHandle<uv_tcp_t> socket;
    bool ended = false;
  };
  struct Echo {
    uv_write_t req{};
    std::string bytes;
  };

  static void on_connection(uv_stream_t* server, int status) {
    auto* self = UvHandle<uv_tcp_t>::owner<EchoListener>(server);
    if (!self || status != 0) return;
    auto peer = std::make_unique<Peer>();
    REQUIRE(peer->socket.init(self->loop_, peer.get(), uv_tcp_init) == 0);
    REQUIRE(uv_accept(server, peer->socket.as_stream()) == 0);
    uv_read_start(peer->socket.as_stream(), &EchoListener::alloc, &EchoListener::on_read);
    self->peers_.push_back(std::move(peer));
  }

  static void alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    thread_local char scratch[65536];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }

  static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
    auto* peer = UvHandle<uv_tcp_t>::owner<Peer>(stream);
    if (!peer || n == 0) return;
    if (n < 0) {
      peer->ended = true;
      if (n != UV_EOF) return peer->socket.close();
      auto* req = new uv_shutdown_t{};  // freed in its callback, which libuv always makes
      if (uv_shutdown(req, stream, [](uv_shutdown_t* r, int) { delete r; }) != 0) delete req;
      return;
    }
    auto* echo = new Echo{};  // freed in its callback (UV_ECANCELED once closed)
    echo->bytes.assign(buf->base, static_cast<size_t>(n));
    uv_buf_t out = uv_buf_init(echo->bytes.data(), static_cast<unsigned>(echo->bytes.size()));
    if (uv_write(&echo->req, stream, &out, 1, [](uv_write_t* r, int) { delete reinterpret_cast<Echo*>(r); }) != 0)
      delete echo;
  }

  uv_loop_t* loop_;
  UvHandle<uv_tcp_t> server_;
  int port_ = 0;
  std::vector<std::unique_ptr<Peer>> peers_;
};

// A transport with streams of its own (as QUIC), faked: its links come up
// after `dial_delay`; a stream's open is answered with `answer` on the next
// turn, or held (as a QUIC open waiting for the peer's credit) when unset.
struct FakeNet {
  uv_loop_t* loop = nullptr;
  uint64_t dial_delay_ms = 0;
  std::optional<Error> answer;
  std::vector<std::chrono::milliseconds> timeouts;  // what each open was given
  std::vector<std::chrono::steady_clock::time_point> opened_at;  // when
  std::vector<size_t> buffers;
  int cancelled = 0;
  Connection* last = nullptr;
  std::vector<std::unique_ptr<Timer>> timers;  // every answer's, kept to the end

  Timer& timer() {
    timers.push_back(std::make_unique<Timer>(loop));
    return *timers.back();
  }
};

class FakeConnection final : public Connection {
 public:
  FakeConnection(FakeNet& net, const DialRequest& r)
      : net_(net), node_(r.node_id), endpoint_(r.endpoint_id), protocol_(r.protocol), address_(r.address),
        port_(r.port) {
    net.last = this;
  }
  ~FakeConnection() override {
    if (net_.last == this) net_.last = nullptr;
  }
  const std::string& node_id() const override { return node_; }
  int64_t endpoint_id() const override { return endpoint_; }
  const std::string& protocol() const override { return protocol_; }
  const std::string& remote_address() const override { return address_; }
  int remote_port() const override { return port_; }
  std::string local_address() const override { return "127.0.0.1:1"; }
  bool is_active() const override { return true; }
  std::optional<double> rtt_ms() const override { return std::nullopt; }
  void close() override {}
  DialHandle open_stream(std::chrono::milliseconds timeout, StreamLimits limits, StreamCallback done) override {
    net_.timeouts.push_back(timeout);
    net_.opened_at.push_back(std::chrono::steady_clock::now());
    net_.buffers.push_back(limits.buffer);
    Timer& t = net_.timer();
    if (net_.answer) t.start(0, [done, e = *net_.answer] { done(e); });
    FakeNet* net = &net_;
    return DialHandle([net, &t] {
      ++net->cancelled;
      t.stop();
    });
  }
  void drop(const std::string& reason) { notify_drop(reason); }

 private:
  FakeNet& net_;
  std::string node_;
  int64_t endpoint_;
  std::string protocol_, address_;
  int port_;
};

class FakeConnector final : public Connector {
 public:
  explicit FakeConnector(FakeNet& net) : net_(net) {}
  std::string_view name() const override { return "fake"; }
  DialHandle connect(const DialRequest& request, ConnectCallback done) override {
    Timer& t = net_.timer();
    FakeNet* net = &net_;
    t.start(net_.dial_delay_ms, [net, request, done] {
      done(std::unique_ptr<Connection>(std::make_unique<FakeConnection>(*net, request)));
    });
    return DialHandle([&t] { t.stop(); });
  }

 private:
  FakeNet& net_;
};

// What open_stream answered.
struct Opened {
  bool inside = false;  // open_stream() is running
  bool done = false;
  int calls = 0;
  Result<OpenedStream> result = Error::internal("no answer");
  std::optional<ConnectFailure> failure;
};

// What a stream reported.
struct Seen {
  std::string data;
  bool eof = false;
  std::string end;  // on_end's reason
  int ends = 0;
};

class Fixture {
 public:
  Fixture() {
    uv_loop_init(&loop);
    StoreOptions so;
    so.path = dir.file("connmgr.db");
    so.flush_interval = 20ms;
    auto s = Store::open(&loop, so);
    REQUIRE(s.ok());
    store = std::move(s).value();
    connectors.add(std::make_unique<TcpConnector>(&loop, TcpOptions{}));
    net.loop = &loop;
    connectors.add(std::make_unique<FakeConnector>(net));
    events.subscribe([this](const Event& e) { seen.push_back(e); });
    ConnectionConfig cfg;
    cfg.connection_timeout = 2000ms;
    cfg.max_retry_count = 0;
    manager = std::make_unique<ConnectionManager>(&loop, *store, connectors, events, cfg);
  }

  ~Fixture() {
    manager.reset();
    store->close();
    store.reset();
    net.timers.clear();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  int64_t add_node(const std::string& id, int port, const std::string& protocol = "tcp") {
    NodeSpec spec;
    spec.id = id;
    EndpointSpec e;
    e.protocol = protocol;
    e.address = "127.0.0.1";
    e.port = port;
    spec.endpoints.push_back(e);
    auto r = store->add_node(spec);
    REQUIRE(r.ok());
    return r->endpoints.at(0).id;
  }

  std::shared_ptr<Opened> start(const std::string& node, StreamClient client = {}) {
    auto o = std::make_shared<Opened>();
    ConnectRequest req;
    req.node_id = node;
    o->inside = true;
    manager->open_stream(req, client, [o](Result<OpenedStream> r, const ConnectFailure* f) {
      CHECK_FALSE(o->inside);  // never from inside open_stream()
      o->done = true;
      o->calls += 1;
      o->result = std::move(r);
      if (f) o->failure = *f;
    });
    o->inside = false;
    return o;
  }

  std::shared_ptr<Opened> open(const std::string& node, StreamClient client = {}) {
    auto o = start(node, client);
    REQUIRE(run_until(&loop, [&] { return o->done; }));
    return o;
  }

  // Opens a stream that must succeed, and starts it into `seen`.
  std::unique_ptr<Stream> open_ok(const std::string& node, Seen* s, StreamClient client = {}) {
    auto o = open(node, client);
    REQUIRE(o->result.ok());
    std::unique_ptr<Stream> stream = std::move(o->result->stream);
    watch(*stream, s);
    return stream;
  }

  static void watch(Stream& stream, Seen* s) {
    Stream* st = &stream;
    st->start({[st, s](std::string_view b) {
                 s->data.append(b);
                 st->consume(b.size());
               },
               [s] { s->eof = true; }, nullptr,
               [s](const std::string& why) {
                 s->end = why;
                 s->ends += 1;
               }});
  }

  std::vector<Event> of_type(EventType type) const {
    std::vector<Event> out;
    for (const auto& e : seen)
      if (e.type == type) out.push_back(e);
    return out;
  }

  // success_count, failure_count of an endpoint, read from the file.
  std::pair<int64_t, int64_t> stats(int64_t endpoint_id) {
    REQUIRE(store->flush().ok());
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(dir.file("connmgr.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT success_count, failure_count FROM endpoints WHERE id = ?", -1,
                       &st, nullptr);
    sqlite3_bind_int64(st, 1, endpoint_id);
    std::pair<int64_t, int64_t> out{-1, -1};
    if (sqlite3_step(st) == SQLITE_ROW) out = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }

  uv_loop_t loop{};
  FakeNet net;
  TempDir dir;
  std::unique_ptr<Store> store;
  ConnectorFactory connectors;
  EventBus events;
  std::vector<Event> seen;
  std::unique_ptr<ConnectionManager> manager;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "a stream over a TCP link echoes bytes and ends with eof") {
  EchoListener node(&loop);
  const int64_t ep = add_node("n1", node.port());
  auto o = open("n1", StreamClient{4242, 1000});
  REQUIRE(o->result.ok());
  CHECK(o->calls == 1);
  CHECK(o->result->stream_id > 0);
  CHECK_FALSE(o->result->link_reused);
  CHECK(o->result->link.node_id == "n1");
  CHECK(o->result->link.state == LinkState::kActive);
  CHECK(o->result->link.streams == 1);
  CHECK(node.accepted() == 2);  // the link, then the stream's own connection
  std::unique_ptr<Stream> stream = std::move(o->result->stream);
  Seen s;
  watch(*stream, &s);
  stream->write("hello, ");
  stream->write("node");
  REQUIRE(run_until(&loop, [&] { return s.data.size() == 11; }));
  CHECK(s.data == "hello, node");
  stream->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return s.ends == 1; }));
  CHECK(s.eof);
  CHECK(s.end == "eof");

  auto link = manager->link_of("n1");
  REQUIRE(link);
  CHECK(link->streams == 0);
  CHECK(link->bytes_in == 11);
  CHECK(link->bytes_out == 11);
  CHECK(manager->stream_count() == 0);
  auto opened = of_type(EventType::kStreamOpened);
  REQUIRE(opened.size() == 1);
  CHECK(opened[0].stream_id == o->result->stream_id);
  CHECK(opened[0].node_id == "n1");
  CHECK(opened[0].endpoint_id == ep);
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 1);
  CHECK(closed[0].stream_id == o->result->stream_id);
  CHECK(closed[0].reason == "eof");
  CHECK(closed[0].bytes_in == 11u);
  CHECK(closed[0].bytes_out == 11u);
  // The stream's dial counts for the endpoint like the link's.
  CHECK(stats(ep) == std::make_pair<int64_t, int64_t>(2, 0));
  // A stream never ends its link.
  run_for(&loop, 30ms);
  CHECK(manager->active_count() == 1);
  CHECK_FALSE(node.ended(0));
}

TEST_CASE_METHOD(Fixture, "a second stream reuses the link; list_streams counts each stream's bytes") {
  EchoListener node(&loop);
  const int64_t ep = add_node("n1", node.port());
  Seen s1, s2;
  auto first = open_ok("n1", &s1, StreamClient{11, 1000});
  auto o = open("n1", StreamClient{22, 0});
  REQUIRE(o->result.ok());
  CHECK(o->result->link_reused);
  CHECK(o->result->link.streams == 2);
  CHECK(o->result->stream_id != 0);
  auto second = std::move(o->result->stream);
  watch(*second, &s2);
  CHECK(node.accepted() == 3);
  first->write("abc");
  second->write(std::string(100000, 'x'));
  REQUIRE(run_until(&loop, [&] { return s1.data.size() == 3 && s2.data.size() == 100000; }));

  CHECK(manager->stream_count() == 2);
  auto list = manager->list_streams();
  REQUIRE(list.size() == 2);
  std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.stream_id < b.stream_id; });
  CHECK(list[0].node_id == "n1");
  CHECK(list[0].endpoint_id == ep);
  CHECK(list[0].protocol == "tcp");
  CHECK(list[0].opened_at > 0);
  CHECK(list[0].bytes_in == 3);
  CHECK(list[0].bytes_out == 3);
  CHECK(list[0].client.pid == 11);
  CHECK(list[0].client.uid == 1000);
  CHECK(list[1].bytes_in == 100000);
  CHECK(list[1].bytes_out == 100000);
  CHECK(list[1].client.pid == 22);
  CHECK(list[1].client.uid == 0);
  auto link = manager->link_of("n1");
  REQUIRE(link);
  CHECK(link->streams == 2);
  CHECK(link->bytes_in == 100003);
  CHECK(link->bytes_out == 100003);
  auto conns = manager->get_active_connections(false);
  REQUIRE(conns.size() == 1);
  CHECK(conns[0].bytes_in == 100003);
  CHECK(of_type(EventType::kConnecting).size() == 1);  // one link dial

  // The metrics count the same as things happen: two streams, their bytes,
  // and three dials (the link's and each TCP stream's own).
  const ManagerMetrics& m = manager->metrics();
  REQUIRE(m.protocols.size() == 1);
  const ProtocolMetrics& tcp = m.protocols[0];
  CHECK(tcp.protocol == "tcp");
  CHECK(tcp.streams == 2);
  CHECK(tcp.stream_bytes_in == 100003);
  CHECK(tcp.stream_bytes_out == 100003);
  CHECK(tcp.dials[static_cast<size_t>(DialResult::kSuccess)] == 3);
  CHECK(tcp.dial_duration.count() == 1);  // link dials only
  first.reset();
  second->reset();
  CHECK(m.protocols[0].streams == 0);
  CHECK(m.protocols[0].stream_bytes_in == 100003);
}

TEST_CASE_METHOD(Fixture, "over max_streams a stream is refused with reason limit") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  ConnectionConfig cfg = manager->config();
  cfg.max_streams = 1;
  manager->set_config(cfg);
  Seen s1;
  auto first = open_ok("n1", &s1);
  auto o = open("n1");
  REQUIRE_FALSE(o->result.ok());
  CHECK(o->result.error().code() == ErrorCode::kStreamRefused);
  CHECK(o->result.error().reason() == "limit");
  CHECK_FALSE(o->failure);
  CHECK(manager->stream_count() == 1);
  // Once the first ends, there is room again.
  first->reset();
  auto again = open("n1");
  CHECK(again->result.ok());
}

TEST_CASE_METHOD(Fixture, "a stream whose own dial fails is refused with the dial's reason") {
  EchoListener node(&loop);
  const int64_t ep = add_node("n1", node.port());
  {
    Seen s;
    auto up = open_ok("n1", &s);  // the link is up; its stream goes
  }
  node.stop();
  run_for(&loop, 10ms);
  auto o = open("n1");
  REQUIRE_FALSE(o->result.ok());
  CHECK(o->result.error().code() == ErrorCode::kStreamRefused);
  CHECK(o->result.error().reason() == "refused");
  CHECK(o->result.error().message().find("refused") != std::string::npos);
  REQUIRE(o->failure);
  CHECK(o->failure->reason == "refused");
  CHECK(o->failure->endpoint_id == ep);
  CHECK(stats(ep) == std::make_pair<int64_t, int64_t>(2, 1));  // link + stream, then the failure
  CHECK(manager->active_count() == 1);  // the link stays
}

TEST_CASE_METHOD(Fixture, "open_stream answers the link's errors as connect does") {
  auto o = open("nobody");
  REQUIRE_FALSE(o->result.ok());
  CHECK(o->result.error().code() == ErrorCode::kNodeNotFound);
  const int port = connmgr::test::closed_port();
  add_node("n1", port);
  auto refused = open("n1");
  REQUIRE_FALSE(refused->result.ok());
  CHECK(refused->result.error().code() == ErrorCode::kConnectFailed);
  REQUIRE(refused->failure);
  CHECK(refused->failure->reason == "refused");
}

TEST_CASE_METHOD(Fixture, "disconnect ends the node's streams with disconnect, before the link") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s1, s2;
  auto a = open_ok("n1", &s1);
  auto b = open_ok("n1", &s2);
  a->write("12345");
  REQUIRE(run_until(&loop, [&] { return s1.data.size() == 5; }));
  auto out = manager->disconnect_node("n1");
  CHECK(out.was_connected);
  CHECK(s1.end == "disconnect");
  CHECK(s2.end == "disconnect");
  CHECK(s1.ends == 1);
  CHECK(manager->stream_count() == 0);
  CHECK(manager->list_streams().empty());
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 2);
  CHECK(closed[0].reason == "disconnect");
  CHECK(closed[0].bytes_in == 5u);
  CHECK(closed[0].bytes_out == 5u);
  CHECK(closed[1].reason == "disconnect");
  // The streams' events come before the link's.
  size_t last_closed = 0, disconnected = 0;
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i].type == EventType::kStreamClosed) last_closed = i;
    if (seen[i].type == EventType::kDisconnected) disconnected = i;
  }
  CHECK(last_closed < disconnected);
  // The node sees every connection end; the ended streams stay usable.
  CHECK(run_until(&loop, [&] { return node.ended(0) && node.ended(1) && node.ended(2); }));
  a->write("ignored");
  a->shutdown_write();
  run_for(&loop, 20ms);
  CHECK(s1.ends == 1);
}

TEST_CASE_METHOD(Fixture, "remove_node_links ends the streams with node_removed") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s;
  auto a = open_ok("n1", &s);
  manager->remove_node_links("n1");
  CHECK(s.end == "node_removed");
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 1);
  CHECK(closed[0].reason == "node_removed");
}

TEST_CASE_METHOD(Fixture, "a dropped link ends its streams with link_lost") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s1, s2;
  auto a = open_ok("n1", &s1);
  auto b = open_ok("n1", &s2);
  node.reset(0);  // the link
  REQUIRE(run_until(&loop, [&] { return s1.ends == 1 && s2.ends == 1; }));
  CHECK(s1.end == "link_lost");
  CHECK(s2.end == "link_lost");
  CHECK_FALSE(manager->has_link("n1"));
  CHECK(manager->stream_count() == 0);
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 2);
  CHECK(closed[0].reason == "link_lost");
  CHECK(closed[1].reason == "link_lost");
  // The streams' own connections were ended toward the node too.
  CHECK(run_until(&loop, [&] { return node.ended(1) && node.ended(2); }));
}

TEST_CASE_METHOD(Fixture, "a link lost while the stream opens answers link_lost") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s;
  auto up = open_ok("n1", &s);
  auto o = start("n1");  // the link is reused: the answer is posted
  manager->disconnect_node("n1");
  REQUIRE(run_until(&loop, [&] { return o->done; }));
  REQUIRE_FALSE(o->result.ok());
  CHECK(o->result.error().code() == ErrorCode::kStreamRefused);
  CHECK(o->result.error().reason() == "link_lost");
}

TEST_CASE_METHOD(Fixture, "the user's reset ends a stream with client_closed, and fires nothing") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s1, s2;
  auto a = open_ok("n1", &s1);
  auto b = open_ok("n1", &s2);
  a->write("xy");
  REQUIRE(run_until(&loop, [&] { return s1.data == "xy"; }));
  a->reset();
  b.reset();  // destroying an unended stream resets it too
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 2);
  CHECK(closed[0].reason == "client_closed");
  CHECK(closed[0].bytes_in == 2u);
  CHECK(closed[1].reason == "client_closed");
  run_for(&loop, 30ms);
  CHECK(s1.ends == 0);
  CHECK(manager->stream_count() == 0);
  CHECK(run_until(&loop, [&] { return node.ended(1) && node.ended(2); }));
  CHECK(manager->active_count() == 1);  // the link stays
  auto link = manager->link_of("n1");
  REQUIRE(link);
  CHECK(link->bytes_out == 2);
}

TEST_CASE_METHOD(Fixture, "a stream may be destroyed from inside its on_end") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  std::vector<std::unique_ptr<Stream>> streams;
  int ends = 0;
  for (int i = 0; i < 3; ++i) {
    auto o = open("n1");
    REQUIRE(o->result.ok());
    streams.push_back(std::move(o->result->stream));
  }
  // Each end destroys every stream, its own included.
  for (auto& st : streams)
    st->start({nullptr, nullptr, nullptr, [&](const std::string&) {
                 ++ends;
                 streams.clear();
               }});
  manager->disconnect_node("n1");
  CHECK(ends == 1);
  CHECK(manager->stream_count() == 0);
  CHECK(of_type(EventType::kStreamClosed).size() == 3);
}

TEST_CASE_METHOD(Fixture, "destroying the manager ends the streams with shutdown; they outlive it") {
  EchoListener node(&loop);
  add_node("n1", node.port());
  Seen s1, s2;
  auto a = open_ok("n1", &s1);
  auto b = open_ok("n1", &s2);
  auto pending = start("n1");  // answered, cancelled, when the manager goes
  manager.reset();
  CHECK(s1.end == "shutdown");
  CHECK(s2.end == "shutdown");
  CHECK(pending->done);
  CHECK(pending->calls == 1);
  CHECK_FALSE(pending->result.ok());
  auto closed = of_type(EventType::kStreamClosed);
  REQUIRE(closed.size() == 2);
  CHECK(closed[0].reason == "shutdown");
  // Nothing calls back late; the streams stay safe to use and destroy.
  a->write("late");
  b->reset();
  run_for(&loop, 30ms);
  CHECK(s1.ends == 1);
  CHECK(s2.ends == 1);
  a.reset();
  CHECK(run_until(&loop, [&] { return node.ended(1) && node.ended(2); }));
}

TEST_CASE_METHOD(Fixture, "the request's timeout covers the link's dial and the stream's open together") {
  add_node("q1", 1, "fake");
  net.dial_delay_ms = 300;
  ConnectionConfig cfg = manager->config();
  cfg.stream_buffer = 12345;
  manager->set_config(cfg);
  ConnectRequest req;
  req.node_id = "q1";
  req.timeout = 1000ms;
  uv_update_time(&loop);  // the fake dial's 300 ms count from now, not from a stale clock
  const auto asked = std::chrono::steady_clock::now();
  manager->open_stream(req, {}, [](Result<OpenedStream>, const ConnectFailure*) {});
  REQUIRE(run_until(&loop, [&] { return net.timeouts.size() == 1; }));
  // The stream's open got what the dial left of the second.
  const auto dial = std::chrono::duration_cast<std::chrono::milliseconds>(net.opened_at[0] - asked);
  CHECK(dial >= 50ms);
  CHECK(net.timeouts[0] <= 1000ms - dial + 5ms);
  CHECK(net.timeouts[0] >= 1000ms - dial - 5ms);
  CHECK(net.buffers[0] == 12345);
}

TEST_CASE_METHOD(Fixture, "a transport's own refusal passes through and is no dial") {
  const int64_t ep = add_node("q1", 1, "fake");
  net.answer = Error::stream_refused("no credit", "stream_limit");
  auto o = open("q1");
  REQUIRE_FALSE(o->result.ok());
  CHECK(o->result.error().code() == ErrorCode::kStreamRefused);
  CHECK(o->result.error().reason() == "stream_limit");
  CHECK_FALSE(o->failure);
  CHECK(stats(ep) == std::make_pair<int64_t, int64_t>(1, 0));  // the link's dial only
  CHECK(manager->active_count() == 1);
}

TEST_CASE_METHOD(Fixture, "opens under way are cancelled when the link ends") {
  add_node("q1", 1, "fake");
  auto held = start("q1");  // held: no credit comes
  REQUIRE(run_until(&loop, [&] { return net.timeouts.size() == 1; }));
  ConnectionConfig cfg = manager->config();
  cfg.max_streams = 1;
  manager->set_config(cfg);
  auto over = open("q1");  // an open under way counts toward max_streams
  REQUIRE_FALSE(over->result.ok());
  CHECK(over->result.error().reason() == "limit");

  SECTION("disconnect: kCancelled") {
    manager->disconnect_node("q1");
    CHECK(net.cancelled == 1);
    REQUIRE(run_until(&loop, [&] { return held->done; }));
    CHECK(held->result.error().code() == ErrorCode::kCancelled);
    CHECK(held->result.error().reason() == "disconnect");
  }
  SECTION("a drop: link_lost") {
    REQUIRE(net.last);
    static_cast<FakeConnection*>(net.last)->drop("reset");
    REQUIRE(run_until(&loop, [&] { return held->done; }));
    CHECK(net.cancelled == 1);
    CHECK(held->result.error().code() == ErrorCode::kStreamRefused);
    CHECK(held->result.error().reason() == "link_lost");
  }
  CHECK(held->calls == 1);
  // Nothing is left counted against max_streams.
  net.answer = Error::stream_refused("no credit", "stream_limit");
  auto next = open("q1");
  CHECK(next->result.error().reason() == "stream_limit");
}
