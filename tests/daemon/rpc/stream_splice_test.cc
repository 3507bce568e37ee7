// The session's hand-over from JSON lines to a raw byte pipe (streams.open):
// a method of the test's own claims the connection and attaches a fake
// Stream that echoes (or resets); the client sees the answer line, then its
// own bytes back, the bytes after its request line first.
#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <deque>

#include "rpc/raw_stream.h"
#include "rpc_test_util.h"

using namespace connmgr;
using namespace connmgr::test;

namespace {

// Echoes what is written, a loop turn later; the end of writing is answered
// with on_eof then on_end("eof"). With `reset_on_write`, the first write is
// answered with on_end("reset").
class EchoStream final : public rpc::RawStream {
 public:
  struct Log {
    std::string written;
    bool shut = false;
    bool reset = false;
    size_t consumed = 0;
  };
  EchoStream(uv_loop_t* loop, std::shared_ptr<Log> log, bool reset_on_write)
      : log_(std::move(log)), reset_on_write_(reset_on_write) {
    timer_.init(loop);
  }
  void start(Callbacks cb) override { cb_ = std::move(cb); }
  void write(std::string_view bytes) override {
    if (ended_) return;
    log_->written.append(bytes);
    if (reset_on_write_) return post([this] { end("reset"); });
    pending_.append(bytes);
    post([this] { flush(); });
  }
  size_t buffered() const override { return pending_.size(); }
  void shutdown_write() override {
    log_->shut = true;
    post([this] {
      flush();
      if (cb_.on_eof) cb_.on_eof();
      post([this] { end("eof"); });
    });
  }
  void consume(size_t n) override { log_->consumed += n; }
  void reset() override {
    log_->reset = true;
    ended_ = true;
  }

 private:
  void post(std::function<void()> fn) {
    queue_.push_back(std::move(fn));
    timer_.start(0, [this] {
      auto q = std::move(queue_);
      queue_.clear();
      for (auto& f : q)
        if (!ended_) f();
    });
  }
  void flush() {
    if (pending_.empty() || ended_) return;
    std::string out = std::move(pending_);
    pending_.clear();
    if (cb_.on_data) cb_.on_data(out);
    if (cb_.on_writable) cb_.on_writable();  // nothing is held any more
  }
  void end(const char* reason) {
    if (ended_) return;
    ended_ = true;
    if (cb_.on_end) cb_.on_end(reason);
  }

  std::shared_ptr<Log> log_;
  bool reset_on_write_;
  Callbacks cb_;
  Timer timer_;
  std::deque<std::function<void()>> queue_;
  std::string pending_;
  bool ended_ = false;
};

// "open": claims the connection; params.fail answers an error instead (the
// connection goes back to lines), params.reset makes the stream reset.
void add_open(RpcFixture& f, std::shared_ptr<EchoStream::Log> log) {
  f.dispatcher().add({"open", true, [&f, log](const json& p, const rpc::CallContext& ctx, rpc::Reply r) {
                        if (!ctx.session->claim_raw()) return r.error({-32602, "not alone", nullptr});
                        if (p.value("fail", false)) return r.error({-32001, "no such node", nullptr});
                        ctx.session->attach_stream(
                            std::make_unique<EchoStream>(f.loop(), log, p.value("reset", false)), 4096);
                        r.result(json{{"stream_id", 1}});
                      }});
}

}  // namespace

TEST_CASE("after the answer line the connection is a raw pipe; early bytes come first") {
  RpcFixture f;
  auto log = std::make_shared<EchoStream::Log>();
  add_open(f, log);
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  f.with_client([&] {
    LineClient c(f.path());
    REQUIRE(c.send(R"({"jsonrpc":"2.0","id":1,"method":"open"})" "\nearly\n"));
    auto answer = c.read_line();
    REQUIRE(answer);
    CHECK(json::parse(*answer)["result"]["stream_id"] == 1);
    REQUIRE(c.send(big));
    c.shut_wr();
    std::string rest;
    CHECK(c.read_to_eof(&rest));
    CHECK(rest == "early\n" + big);
  });
  CHECK(log->written == "early\n" + big);
  CHECK(log->shut);
  CHECK_FALSE(log->reset);
  CHECK(log->consumed == log->written.size());
}

TEST_CASE("a stream reset by the node closes the client at once") {
  RpcFixture f;
  auto log = std::make_shared<EchoStream::Log>();
  add_open(f, log);
  f.with_client([&] {
    LineClient c(f.path());
    REQUIRE(c.send(R"({"jsonrpc":"2.0","id":1,"method":"open","params":{"reset":true}})" "\n"));
    REQUIRE(c.read_line());
    REQUIRE(c.send("boom"));
    CHECK(c.read_to_eof());
  });
  CHECK(log->written == "boom");
}

TEST_CASE("a client that closes resets the stream") {
  RpcFixture f;
  auto log = std::make_shared<EchoStream::Log>();
  add_open(f, log);
  f.with_client([&] {
    LineClient c(f.path());
    REQUIRE(c.send(R"({"jsonrpc":"2.0","id":1,"method":"open"})" "\n"));
    REQUIRE(c.read_line());
  });  // the client's socket closes here
  for (int i = 0; i < 100 && !log->reset; ++i) uv_run(f.loop(), UV_RUN_NOWAIT);
  CHECK(log->reset);
}

TEST_CASE("an error answer gives the connection back to JSON-RPC, kept bytes read as lines") {
  RpcFixture f;
  auto log = std::make_shared<EchoStream::Log>();
  add_open(f, log);
  f.with_client([&] {
    LineClient c(f.path());
    REQUIRE(c.send(R"({"jsonrpc":"2.0","id":1,"method":"open","params":{"fail":true}})" "\n"
                   R"({"jsonrpc":"2.0","id":2,"method":"echo","params":{"a":1}})" "\n"));
    auto first = c.read_line();
    REQUIRE(first);
    CHECK(json::parse(*first)["error"]["code"] == -32001);
    auto second = c.read_line();
    REQUIRE(second);
    CHECK(json::parse(*second)["id"] == 2);
  });
  CHECK(log->written.empty());
}

TEST_CASE("a claim is refused with another request of the connection unanswered") {
  RpcFixture f;
  auto log = std::make_shared<EchoStream::Log>();
  add_open(f, log);
  f.with_client([&] {
    LineClient c(f.path());
    REQUIRE(c.send(R"({"jsonrpc":"2.0","id":1,"method":"slow","params":{"ms":200}})" "\n"
                   R"({"jsonrpc":"2.0","id":2,"method":"open"})" "\n"));
    auto first = c.read_line();
    REQUIRE(first);
    CHECK(json::parse(*first)["id"] == 2);
    CHECK(json::parse(*first)["error"]["code"] == -32602);
    auto second = c.read_line();
    REQUIRE(second);
    CHECK(json::parse(*second)["id"] == 1);
  });
}
