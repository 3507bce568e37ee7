#include "net/resolver.h"

#include <netdb.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <optional>
#include <utility>

#include "net/failure_reason.h"
#include "net/socket_address.h"

namespace connmgr {

namespace {

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    return memcmp(&reinterpret_cast<const sockaddr_in&>(a).sin_addr,
                  &reinterpret_cast<const sockaddr_in&>(b).sin_addr, sizeof(in_addr)) == 0;
  }
  const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
  const auto& b6 = reinterpret_cast<const sockaddr_in6&>(b);
  return memcmp(&a6.sin6_addr, &b6.sin6_addr, sizeof(in6_addr)) == 0 &&
         a6.sin6_scope_id == b6.sin6_scope_id;
}

// One resolution. States: waiting for getaddrinfo (resolving_) or for the
// timer that delivers an answer known at once (pending_), then finished.
// It frees itself once finished and both the timer's close callback and
// getaddrinfo's callback (if it was started) have run: refs_ counts them.
class Resolution {
 public:
  Resolution(uv_loop_t* loop, std::string host, int port, ResolveCallback done)
      : loop_(loop), host_(std::move(host)), port_(port), done_(std::move(done)),
        alive_(std::make_shared<bool>(true)) {}

  DialHandle start(std::chrono::milliseconds timeout) {
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    ++refs_;  // the timer, until its close callback

    sockaddr_storage literal{};
    if (parse_ip_literal(host_, port_, &literal)) {
      answer_later(std::vector<sockaddr_storage>{literal});
    } else if (host_.empty()) {
      answer_later(Error(ErrorCode::kConnectFailed, "cannot resolve an empty host name",
                         reason::kDns));
    } else {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      // One entry per address (without it each comes once per socket type).
      hints.ai_socktype = SOCK_STREAM;
      gai_.data = this;
      int rc = uv_getaddrinfo(
          loop_, &gai_,
          [](uv_getaddrinfo_t* r, int status, addrinfo* res) {
            static_cast<Resolution*>(r->data)->on_resolved(status, res);
          },
          host_.c_str(), nullptr, &hints);
      if (rc != 0) {
        answer_later(dns_error(rc));
      } else {
        resolving_ = true;
        ++refs_;  // getaddrinfo, until its callback
        if (timeout.count() > 0) {
          uv_update_time(loop_);  // count from now, not from the loop's cached time
          uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Resolution*>(t->data)->on_timer(); },
                         static_cast<uint64_t>(timeout.count()), 0);
        }
      }
    }
    timeout_ = timeout;
    std::weak_ptr<bool> alive = alive_;
    return DialHandle([this, alive] {
      // alive_ is true only while this resolution is unfinished, hence not freed.
      if (auto a = alive.lock(); a && *a) cancel();
    });
  }

 private:
  void on_resolved(int status, addrinfo* res) {
    resolving_ = false;
    --refs_;
    if (!finished_) {
      if (status != 0) {
        deliver(dns_error(status));
      } else {
        std::vector<sockaddr_storage> out;
        for (const addrinfo* ai = res; ai; ai = ai->ai_next) {
          if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
          sockaddr_storage ss{};
          memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
          if (ss.ss_family == AF_INET)
            reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(static_cast<uint16_t>(port_));
          else
            reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(static_cast<uint16_t>(port_));
          bool seen = false;
          for (const auto& prev : out) seen = seen || same_address(prev, ss);
          if (!seen) out.push_back(ss);
        }
        if (out.empty()) {
          deliver(Error(ErrorCode::kConnectFailed,
                        "cannot resolve " + host_ + ": no IPv4 or IPv6 address", reason::kDns));
        } else {
          deliver(std::move(out));
        }
      }
    }
    uv_freeaddrinfo(res);
    maybe_free();
  }

  void on_timer() {
    if (pending_) {
      auto answer = std::move(*pending_);
      pending_.reset();
      deliver(std::move(answer));
    } else {
      deliver(Error(ErrorCode::kConnectFailed,
                    "resolving " + host_ + " timed out after " + std::to_string(timeout_.count()) +
                        " ms",
                    reason::kTimeout));
    }
  }

  void cancel() {
    done_ = nullptr;
    finish();
    maybe_free();
  }

  // An answer known while resolve() is still on the stack goes out on the
  // next loop turn, through the timer, so that `done` never runs inside it.
  void answer_later(Result<std::vector<sockaddr_storage>> answer) {
    pending_.emplace(std::move(answer));
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Resolution*>(t->data)->on_timer(); },
                   0, 0);
  }

  Error dns_error(int uv_error) const {
    return Error(ErrorCode::kConnectFailed, "cannot resolve " + host_ + ": " + uv_strerror(uv_error),
                 reason::from_uv(uv_error));
  }

  void deliver(Result<std::vector<sockaddr_storage>> answer) {
    if (finished_) return;
    auto done = std::move(done_);
    finish();
    // The timer's close callback is still to come, so `this` survives `done`.
    if (done) done(std::move(answer));
    maybe_free();
  }

  // Stops everything still running; callbacks that follow find finished_.
  void finish() {
    if (finished_) return;
    finished_ = true;
    *alive_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<Resolution*>(h->data);
      --self->refs_;
      self->maybe_free();
    });
    // Succeeds only while the request still waits in the queue; one already
    // running calls back later with its answer, which finished_ discards.
    if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));
  }

  void maybe_free() {
    if (finished_ && refs_ == 0) delete this;
  }

  uv_loop_t* loop_;
  std::string host_;
  int port_;
  ResolveCallback done_;
  std::shared_ptr<bool> alive_;
  std::chrono::milliseconds timeout_{0};

  uv_timer_t timer_{};
  uv_getaddrinfo_t gai_{};
  bool resolving_ = false;
  std::optional<Result<std::vector<sockaddr_storage>>> pending_;
  int refs_ = 0;
  bool finished_ = false;
};

}  // namespace

DialHandle resolve(uv_loop_t* loop, const std::string& host, int port,
                   std::chrono::milliseconds timeout, ResolveCallback done) {
  auto* resolution = new Resolution(loop, host, port, std::move(done));
  return resolution->start(timeout);
}

}  // namespace connmgr
