#include "rpc/json_text.h"
#include "rpc/method.h"

namespace connmgr::rpc {

// The one answer shared by every copy of a Reply. Destroyed unanswered, it
// answers an internal error, so that a method that forgets to answer cannot leave a
// client waiting (and the server's count of answers owed stays exact).
struct Reply::State {
  std::string id_text;
  bool is_notification = false;
  bool done = false;
  Done on_done;
  RequestCounts* counts = nullptr;

  // Marks the answer given and hands `line` on (a notification gets nullopt:
  // it runs, but JSON-RPC sends nothing back for it).
  void finish(std::optional<std::string> line) {
    done = true;
    auto d = std::move(on_done);
    if (!d) return;
    if (is_notification) return d(std::nullopt);
    d(std::move(line));
  }

  void count(bool ok) {
    if (counts) ++(ok ? counts->success : counts->error);
  }

  ~State() {
    if (!done) {
      count(false);
      finish(error_answer(id_text, kInternalError, "internal error: the method gave no answer"));
    }
  }
};

Reply::Reply(std::string id_text, bool is_notification, Done done)
    : state_(std::make_shared<State>()) {
  state_->id_text = std::move(id_text);
  state_->is_notification = is_notification;
  state_->on_done = std::move(done);
}

void Reply::result(const json& value) {
  if (!state_ || state_->done) return;
  state_->count(true);
  if (state_->is_notification) return state_->finish(std::nullopt);  // nothing to write
  state_->finish(answer_line(state_->id_text, false, value));
}

void Reply::result_text(std::string_view json_text) {
  if (!state_ || state_->done) return;
  state_->count(true);
  if (state_->is_notification) return state_->finish(std::nullopt);
  state_->finish(result_line(state_->id_text, json_text));
}

void Reply::error(RpcError error) {
  if (!state_ || state_->done) return;
  state_->count(false);
  if (state_->is_notification) return state_->finish(std::nullopt);
  state_->finish(error_answer(state_->id_text, error.code, error.message, error.data));
}

bool Reply::answered() const { return !state_ || state_->done; }

void Reply::count_into(RequestCounts* counts) {
  if (state_) state_->counts = counts;
}

}  // namespace connmgr::rpc
