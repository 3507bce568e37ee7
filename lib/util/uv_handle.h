// The one way connmgr owns libuv handles and requests.
//
// A libuv handle must stay in memory from its uv_*_init until the callback of
// its uv_close has run, which is a later loop turn; its owner usually wants to
// be gone sooner (a dial cancelled, a client that left). These types split the
// two lifetimes: the handle lives in a heap block of its own that is freed in
// the close callback and nowhere else, while the owner may be destroyed at any
// time.
//
// - UvHandle<H>: owns one handle (uv_timer_t, uv_tcp_t, uv_pipe_t, uv_udp_t,
//   uv_poll_t, uv_idle_t, uv_signal_t, ...). The handle's `data` is its
//   owner, set by init(); trampolines reach the owner only through
//   UvHandle<H>::owner<T>(handle). close() (also run by the destructor) sets
//   `data` to null before uv_close, so any callback that libuv still makes
//   (a write request's UV_ECANCELED, for instance) finds no owner and returns:
//   no callback reaches a closed owner.
// - Timer: a UvHandle<uv_timer_t> with a std::function callback, for the
//   common case. Its callback never runs after stop(), close() or the Timer's
//   destruction, and it may destroy the Timer (and its owner) while it runs.
// - AddrInfoRequest: one uv_getaddrinfo whose owner may go first. libuv always
//   calls a getaddrinfo back, even after uv_cancel (which fails once the
//   thread pool runs the request); the request's block waits for that call
//   and frees itself, and `done` is not called once cancelled.
//
// Threads: the loop's thread only, like libuv itself.
#pragma once

#include <netdb.h>
#include <uv.h>

#include <functional>
#include <utility>

namespace connmgr {

template <typename H>
class UvHandle {
 public:
  UvHandle() = default;
  ~UvHandle() { close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;
  // Moving hands the open handle to another UvHandle (a dial's socket to the
  // connection that keeps it); the handle itself never moves in memory.
  UvHandle(UvHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  UvHandle& operator=(UvHandle&& other) noexcept {
    if (this != &other) {
      close();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }

  // Allocates the handle and runs `init(loop, handle, args...)` (uv_timer_init,
  // uv_pipe_init with its ipc flag, uv_poll_init with its fd, ...). On success
  // the handle is open and its `data` is `owner`; on failure nothing is open
  // and libuv's error is returned. An open handle is closed first.
  template <typename Init, typename... Args>
  int init(uv_loop_t* loop, void* owner, Init&& init_fn, Args&&... args) {
    close();
    H* fresh = new H{};
    const int rc = init_fn(loop, fresh, std::forward<Args>(args)...);
    if (rc != 0) {
      delete fresh;  // libuv did not take it: nothing for uv_close to do
      return rc;
    }
    fresh->data = owner;
    handle_ = fresh;
    return 0;
  }

  // Closes the handle (stopping whatever it does); its memory is freed in the
  // close callback. Idempotent. After it, owner<T>() of the handle is null.
  void close() noexcept {
    if (!handle_) return;
    H* h = std::exchange(handle_, nullptr);
    h->data = nullptr;
    auto* base = reinterpret_cast<uv_handle_t*>(h);
    if (!uv_is_closing(base)) uv_close(base, [](uv_handle_t* closed) { delete reinterpret_cast<H*>(closed); });
  }

  // Points the open handle's callbacks at another owner (the handle's new
  // holder after a move).
  void set_owner(void* owner) {
    if (handle_) handle_->data = owner;
  }

  // The owner of a handle inside a libuv callback, or null once closed.
  template <typename T, typename AnyHandle>
  static T* owner(AnyHandle* handle) {
    return static_cast<T*>(handle->data);
  }

  explicit operator bool() const { return handle_ != nullptr; }
  H* get() const { return handle_; }
  H* operator->() const { return handle_; }
  uv_handle_t* as_handle() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  uv_stream_t* as_stream() const { return reinterpret_cast<uv_stream_t*>(handle_); }

 private:
  H* handle_ = nullptr;
};

// A one-shot or repeating timer whose callback is a std::function.
// Movable: the handle's owner follows the Timer object.
class Timer {
 public:
  Timer() = default;
  explicit Timer(uv_loop_t* loop) { init(loop); }
  ~Timer() = default;  // UvHandle closes; the callback goes with this object
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  Timer(Timer&& other) noexcept : handle_(std::move(other.handle_)), fn_(std::move(other.fn_)) {
    handle_.set_owner(this);
  }
  Timer& operator=(Timer&& other) noexcept {
    if (this != &other) {
      handle_ = std::move(other.handle_);
      fn_ = std::move(other.fn_);
      handle_.set_owner(this);
    }
    return *this;
  }

  // Opens the timer on `loop` (a Timer made with the default constructor
  // must be initialised before start()). Returns libuv's error, 0 on success.
  int init(uv_loop_t* loop) { return handle_.init(loop, this, uv_timer_init); }
  bool initialized() const { return static_cast<bool>(handle_); }

  // (Re)starts the timer: `fn` runs after `timeout_ms`, then every
  // `repeat_ms` when that is not 0. Replaces any callback set before.
  void start(uint64_t timeout_ms, std::function<void()> fn, uint64_t repeat_ms = 0) {
    fn_ = std::move(fn);
    uv_timer_start(handle_.get(), &Timer::fire, timeout_ms, repeat_ms);
  }
  // Stops the timer; its callback does not run until the next start().
  void stop() {
    if (handle_) uv_timer_stop(handle_.get());
    fn_ = nullptr;
  }
  bool active() const { return handle_ && uv_is_active(handle_.as_handle()) != 0; }
  // A timer that should not keep the loop running on its own.
  void unref() {
    if (handle_) uv_unref(handle_.as_handle());
  }
  // Closes the handle now (the destructor does the same).
  void close() {
    fn_ = nullptr;
    handle_.close();
  }

 private:
  static void fire(uv_timer_t* handle) {
    Timer* self = UvHandle<uv_timer_t>::owner<Timer>(handle);
    if (!self || !self->fn_) return;
    if (uv_timer_get_repeat(handle) == 0) {
      // One-shot: the callback leaves the Timer before it runs, so it may
      // restart the timer or destroy the Timer and its owner.
      auto fn = std::exchange(self->fn_, nullptr);
      fn();
    } else {
      auto fn = self->fn_;  // a copy: the callback may destroy the Timer
      fn();
    }
  }

  UvHandle<uv_timer_t> handle_;
  std::function<void()> fn_;
};

// One name resolution on libuv's thread pool.
class AddrInfoRequest {
 public:
  // `result` is freed after `done` returns (uv_freeaddrinfo); `status` is
  // libuv's (0, or a UV_EAI_* error).
  using Done = std::function<void(int status, addrinfo* result)>;

  AddrInfoRequest() = default;
  ~AddrInfoRequest() { cancel(); }
  AddrInfoRequest(const AddrInfoRequest&) = delete;
  AddrInfoRequest& operator=(const AddrInfoRequest&) = delete;

  // Starts resolving; any resolution under way is cancelled first. Returns
  // libuv's error (done is then never called), 0 on success.
  int start(uv_loop_t* loop, const char* node, const char* service, const addrinfo* hints,
            Done done) {
    cancel();
    auto* block = new Block{};
    block->done = std::move(done);
    block->owner = this;
    const int rc = uv_getaddrinfo(loop, &block->req, &AddrInfoRequest::resolved, node, service, hints);
    if (rc != 0) {
      delete block;
      return rc;
    }
    block_ = block;
    return 0;
  }
  // `done` will not be called; the request frees itself when libuv calls back.
  void cancel() {
    Block* block = std::exchange(block_, nullptr);
    if (!block) return;
    block->done = nullptr;
    block->owner = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&block->req));  // fails once running: harmless
  }
  bool pending() const { return block_ != nullptr; }

 private:
  struct Block {
    uv_getaddrinfo_t req{};
    Done done;
    AddrInfoRequest* owner = nullptr;
  };

  static void resolved(uv_getaddrinfo_t* req, int status, addrinfo* result) {
    auto* block = reinterpret_cast<Block*>(req);  // req is the block's first member
    if (block->owner) block->owner->block_ = nullptr;
    auto done = std::move(block->done);
    delete block;
    // Last: `done` may destroy the request's owner.
    if (done) done(status, result);
    if (result) uv_freeaddrinfo(result);
  }

  Block* block_ = nullptr;
};

}  // namespace connmgr
