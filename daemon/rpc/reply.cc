#include "rpc/method.h"

namespace connmgr::rpc {

// The one answer shared by every copy of a Reply. Destroyed unanswered, it
// answers -32603, so that a method that forgets to answer cannot leave a
// client waiting (and the server's count of answers owed stays exact).
struct Reply::State {
  Sink sink;
  bool done = false;
  ~State() {
    if (!done && sink)
      sink(true, json{{"code", -32603}, {"message", "internal error: the method gave no answer"}});
  }
};

Reply::Reply(Sink sink) : state_(std::make_shared<State>()) { state_->sink = std::move(sink); }

void Reply::result(json value) {
  if (!state_ || state_->done) return;
  state_->done = true;
  auto sink = std::move(state_->sink);
  sink(false, std::move(value));
}

void Reply::error(RpcError error) {
  if (!state_ || state_->done) return;
  state_->done = true;
  json e{{"code", error.code}, {"message", std::move(error.message)}};
  if (!error.data.is_null()) e["data"] = std::move(error.data);
  auto sink = std::move(state_->sink);
  sink(true, std::move(e));
}

bool Reply::answered() const { return !state_ || state_->done; }

}  // namespace connmgr::rpc
