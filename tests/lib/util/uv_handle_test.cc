#include "util/uv_handle.h"

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace connmgr;

namespace {

// Runs the loop until nothing is left on it (every close callback included).
// A guard timer, unreferenced so that it keeps nothing alive, stops a loop
// that a handle left open would keep running: the test fails, it does not hang.
bool drain(uv_loop_t* loop) {
  uv_timer_t guard;
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, [](uv_timer_t* t) { uv_stop(t->loop); }, 5000, 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&guard));
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);  // the guard's close
  return !uv_loop_alive(loop);
}

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    drain(&loop);
    uv_loop_close(&loop);
  }
};

// An owner of a timer, as a dial or a session is.
struct TimerOwner {
  explicit TimerOwner(uv_loop_t* loop, int* fired) : timer(loop), fired(fired) {}
  void arm(uint64_t ms) {
    timer.start(ms, [this] { ++*fired; });
  }
  Timer timer;
  int* fired;
};

}  // namespace

TEST_CASE("destroying a timer's owner with its callback pending neither calls back nor leaks") {
  Loop l;
  int fired = 0;
  auto owner = std::make_unique<TimerOwner>(&l.loop, &fired);
  owner->arm(0);
  owner.reset();  // the timer was due on the next turn
  REQUIRE(drain(&l.loop));  // the handle's close callback ran: its memory is freed (LSan)
  CHECK(fired == 0);
}

TEST_CASE("a timer fires once, again when restarted, and not after stop()") {
  Loop l;
  int fired = 0;
  TimerOwner owner(&l.loop, &fired);
  owner.arm(0);
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(fired == 1);
  owner.arm(0);
  owner.timer.stop();
  owner.timer.unref();
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(fired == 1);
  CHECK_FALSE(owner.timer.active());
}

TEST_CASE("a timer's callback may destroy the timer's owner") {
  Loop l;
  int fired = 0;
  std::unique_ptr<TimerOwner> owner = std::make_unique<TimerOwner>(&l.loop, &fired);
  owner->timer.start(0, [&] {
    ++fired;
    owner.reset();
  });
  REQUIRE(drain(&l.loop));
  CHECK(fired == 1);
  CHECK(owner == nullptr);
}

TEST_CASE("a repeating timer's callback may destroy it") {
  Loop l;
  int ticks = 0;
  auto timer = std::make_unique<Timer>(&l.loop);
  timer->start(
      0,
      [&] {
        if (++ticks == 3) timer.reset();
      },
      1);
  REQUIRE(drain(&l.loop));
  CHECK(ticks == 3);
}

TEST_CASE("a moved timer calls back through its new owner") {
  Loop l;
  int fired = 0;
  Timer first(&l.loop);
  first.start(0, [&] { ++fired; });
  Timer second(std::move(first));
  CHECK_FALSE(first.initialized());
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(fired == 1);
}

namespace {

// A pipe end with a write queued that its peer never reads.
struct Writer {
  UvHandle<uv_pipe_t> pipe;
  int* callbacks_reaching_owner;
};

struct PendingWrite {
  uv_write_t req{};
  std::string bytes;
};

}  // namespace

TEST_CASE("closing a stream with a write queued: the write's callback finds no owner") {
  Loop l;
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  int reached = 0;
  auto writer = std::make_unique<Writer>();
  writer->callbacks_reaching_owner = &reached;
  REQUIRE(writer->pipe.init(&l.loop, writer.get(), uv_pipe_init, 0) == 0);
  REQUIRE(uv_pipe_open(writer->pipe.get(), fds[0]) == 0);

  // More than the socket buffers take, so that the write stays queued.
  auto* w = new PendingWrite;
  w->bytes.assign(8 << 20, 'x');
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  static int cancelled = 0;
  cancelled = 0;
  REQUIRE(uv_write(&w->req, writer->pipe.as_stream(), &buf, 1, [](uv_write_t* req, int status) {
            auto* owner = UvHandle<uv_pipe_t>::owner<Writer>(req->handle);
            if (owner) ++*owner->callbacks_reaching_owner;
            if (status == UV_ECANCELED) ++cancelled;
            delete reinterpret_cast<PendingWrite*>(req);
          }) == 0);
  uv_run(&l.loop, UV_RUN_NOWAIT);

  writer.reset();
  REQUIRE(drain(&l.loop));
  CHECK(reached == 0);
  CHECK(cancelled == 1);
  close(fds[1]);
}

TEST_CASE("a handle whose init fails is not open and needs no close") {
  Loop l;
  UvHandle<uv_poll_t> poll;
  CHECK(poll.init(&l.loop, nullptr, uv_poll_init, -1) != 0);
  CHECK_FALSE(poll);
  CHECK_FALSE(uv_loop_alive(&l.loop));
}

TEST_CASE("a UvHandle moved to a new holder stays open, and closes once") {
  Loop l;
  int owner_tag = 0;
  UvHandle<uv_idle_t> first;
  REQUIRE(first.init(&l.loop, &owner_tag, uv_idle_init) == 0);
  uv_idle_t* raw = first.get();
  UvHandle<uv_idle_t> second = std::move(first);
  CHECK_FALSE(first);
  CHECK(second.get() == raw);
  CHECK(UvHandle<uv_idle_t>::owner<int>(raw) == &owner_tag);
  second.close();
  second.close();  // idempotent
  REQUIRE(drain(&l.loop));
}

TEST_CASE("a cancelled name resolution never calls back and frees itself") {
  Loop l;
  int called = 0;
  {
    AddrInfoRequest req;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    REQUIRE(req.start(&l.loop, "localhost", "80", &hints, [&](int, addrinfo*) { ++called; }) == 0);
    CHECK(req.pending());
  }  // destroyed before libuv answered
  REQUIRE(drain(&l.loop));
  CHECK(called == 0);
}

TEST_CASE("a name resolution answers once with its addresses") {
  Loop l;
  std::vector<int> statuses;
  bool had_result = false;
  AddrInfoRequest req;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  REQUIRE(req.start(&l.loop, "127.0.0.1", "80", &hints, [&](int status, addrinfo* res) {
            statuses.push_back(status);
            had_result = res != nullptr;
          }) == 0);
  REQUIRE(drain(&l.loop));
  REQUIRE(statuses.size() == 1);
  CHECK(statuses[0] == 0);
  CHECK(had_result);
  CHECK_FALSE(req.pending());
}
