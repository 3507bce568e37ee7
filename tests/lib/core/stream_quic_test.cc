// ConnectionManager::open_stream over a real QUIC link: the project's test
// peer (connmgr-test-peer) echoing QUIC streams. All of a node's streams
// share its one QUIC connection.
#include <catch2/catch.hpp>

#include "core/connection_manager.h"
#include "quic/quic_connector.h"
#include "test_support.h"

using namespace connmgr;
using namespace std::chrono_literals;
using connmgr::test::run_until;
using connmgr::test::TempDir;
using connmgr::test::TestPeerProcess;

namespace {

struct Seen {
  std::string data;
  std::string end;
  int ends = 0;
};

class Fixture {
 public:
  Fixture() {
    uv_loop_init(&loop);
    StoreOptions so;
    so.path = dir.file("connmgr.db");
    auto s = Store::open(&loop, so);
    REQUIRE(s.ok());
    store = std::move(s).value();
    auto q = QuicConnector::create(&loop, QuicOptions{});
    REQUIRE(q.ok());
    connectors.add(std::move(q).value());
    events.subscribe([this](const Event& e) { seen.push_back(e); });
    ConnectionConfig cfg;
    cfg.connection_timeout = 5000ms;
    cfg.max_retry_count = 0;
    manager = std::make_unique<ConnectionManager>(&loop, *store, connectors, events, cfg);
    NodeSpec spec;
    spec.id = "q1";
    EndpointSpec e;
    e.protocol = "quic";
    e.address = "127.0.0.1";
    e.port = peer.quic_port;
    e.pin_sha256 = peer.pin;
    spec.endpoints.push_back(e);
    REQUIRE(store->add_node(spec).ok());
  }
  ~Fixture() {
    manager.reset();
    store->close();
    store.reset();
    connmgr::test::drain_loop(&loop);
    uv_loop_close(&loop);
  }

  Result<OpenedStream> open() {
    std::optional<Result<OpenedStream>> out;
    ConnectRequest req;
    req.node_id = "q1";
    manager->open_stream(req, {}, [&](Result<OpenedStream> r, const ConnectFailure*) { out.emplace(std::move(r)); });
    REQUIRE(run_until(&loop, [&] { return out.has_value(); }, 15s));
    return std::move(*out);
  }

  std::unique_ptr<Stream> open_ok(Seen* s) {
    auto r = open();
    if (!r.ok()) FAIL("open_stream failed: " << r.error().message());
    std::unique_ptr<Stream> st = std::move(r->stream);
    Stream* p = st.get();
    p->start({[p, s](std::string_view b) {
                s->data.append(b);
                p->consume(b.size());
              },
              nullptr, nullptr,
              [s](const std::string& why) {
                s->end = why;
                s->ends += 1;
              }});
    return st;
  }

  size_t closed_with(const std::string& reason) const {
    size_t n = 0;
    for (const auto& e : seen) n += e.type == EventType::kStreamClosed && e.reason == reason;
    return n;
  }

  uv_loop_t loop{};
  TempDir dir;
  TestPeerProcess peer{dir, {"--quic-streams", "echo"}};  // echoes QUIC streams
  std::unique_ptr<Store> store;
  ConnectorFactory connectors;
  EventBus events;
  std::vector<Event> seen;
  std::unique_ptr<ConnectionManager> manager;
};

}  // namespace

TEST_CASE_METHOD(Fixture, "streams over one QUIC link echo, and a closed link ends them with link_lost") {
  Seen s1, s2;
  auto a = open_ok(&s1);
  auto second = open();
  REQUIRE(second.ok());
  CHECK(second->link_reused);
  CHECK(second->link.streams == 2);
  auto b = std::move(second->stream);
  Stream* bp = b.get();
  bp->start({[bp, &s2](std::string_view x) {
               s2.data.append(x);
               bp->consume(x.size());
             },
             nullptr, nullptr, [&s2](const std::string& why) { s2.end = why; s2.ends += 1; }});
  a->write("over quic");
  b->write(std::string(300000, 'q'));
  REQUIRE(run_until(&loop, [&] { return s1.data.size() == 9 && s2.data.size() == 300000; }, 15s));
  CHECK(s1.data == "over quic");
  auto link = manager->link_of("q1");
  REQUIRE(link);
  CHECK(link->bytes_in == 300009);
  CHECK(link->bytes_out == 300009);

  REQUIRE(peer.command("close-all"));  // CONNECTION_CLOSE: the link drops
  REQUIRE(run_until(&loop, [&] { return s1.ends == 1 && s2.ends == 1; }, 15s));
  CHECK(s1.end == "link_lost");
  CHECK(s2.end == "link_lost");
  CHECK(closed_with("link_lost") == 2);
  CHECK(manager->stream_count() == 0);
}

TEST_CASE_METHOD(Fixture, "disconnect ends a QUIC link's streams with disconnect; eof passes through") {
  Seen s1, s2;
  auto a = open_ok(&s1);
  auto b = open_ok(&s2);
  b->write("bye");
  b->shutdown_write();
  REQUIRE(run_until(&loop, [&] { return s2.ends == 1; }, 15s));
  CHECK(s2.end == "eof");
  CHECK(s2.data == "bye");
  manager->disconnect_node("q1");
  CHECK(s1.end == "disconnect");
  CHECK(closed_with("disconnect") == 1);
  CHECK(closed_with("eof") == 1);
  a.reset();
  b.reset();
}

TEST_CASE_METHOD(Fixture, "a QUIC race answers in about the race delay when the best endpoint never answers") {
  connmgr::test::SilentUdpPort silent;
  NodeSpec spec;
  spec.id = "q2";
  for (int port : {silent.port(), peer.quic_port}) {  // equal records: the silent one ranks first
    EndpointSpec e;
    e.protocol = "quic";
    e.address = "127.0.0.1";
    e.port = port;
    e.pin_sha256 = peer.pin;
    spec.endpoints.push_back(e);
  }
  REQUIRE(store->add_node(spec).ok());
  std::optional<Result<ConnectOutcome>> out;
  ConnectRequest req;
  req.node_id = "q2";
  const uint64_t t0 = uv_hrtime();
  manager->connect(req, [&](Result<ConnectOutcome> r, const ConnectFailure*) { out.emplace(std::move(r)); });
  REQUIRE(run_until(&loop, [&] { return out.has_value(); }, 15s));
  const double took = static_cast<double>(uv_hrtime() - t0) / 1e6;
  REQUIRE(out->ok());
  CHECK((*out)->link.port == peer.quic_port);
  CHECK(took >= 240);   // the silent endpoint had its 250 ms
  CHECK(took < 3000);   // not the 5 s timeout
  std::vector<Event> failed;
  for (const auto& e : seen)
    if (e.type == EventType::kConnectFailed) failed.push_back(e);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].reason == "cancelled");
  auto ex = manager->explain("q2", std::nullopt);
  REQUIRE(ex.ok());
  CHECK(ex->decision == Decision::kReuse);
  CHECK(ex->network.classes[static_cast<size_t>(AddressClass::kUdp4)].state == "up");
  manager->disconnect_node("q2");
}
