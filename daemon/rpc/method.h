// The seam between the JSON-RPC layer (daemon/rpc, daemon/server) and the API
// methods (daemon/methods): what a method is given and how it answers.
//
// Threads: everything on the loop thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "rpc/raw_stream.h"
#include "util/error.h"

namespace connmgr::rpc {

using json = nlohmann::json;

// SO_PEERCRED of the client's socket (taken at connect time by the kernel),
// and the supplementary groups of SO_PEERGROUPS when the kernel gave them.
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  bool groups_known = false;
  std::vector<gid_t> groups;
};

// A client connection as methods see it. Owned by the socket server; methods
// keep only std::weak_ptr<Session> (or copies of the shared_ptr for the
// duration of a call), since the client may go away at any time.
class Session {
 public:
  virtual ~Session() = default;
  virtual uint64_t id() const = 0;
  virtual const PeerCredentials& credentials() const = 0;
  // Queues a notification line ({"jsonrpc":"2.0","method":...}) for the client.
  // Dropped silently once the client has gone.
  virtual void notify(const json& notification) = 0;
  virtual bool closed() const = 0;
  // `hook` is called once, on the loop, when the client goes away (e.g. to
  // unsubscribe from events), also when the server closes it at shutdown.
  // Not called when registered after the session has closed (check
  // closed()), nor after forget_close_hook() with the id returned here: an
  // owner that may go first (the Api) forgets its hooks when it goes.
  using CloseHookId = uint64_t;
  virtual CloseHookId on_close(std::function<void()> hook) = 0;
  virtual void forget_close_hook(CloseHookId id) = 0;

  // streams.open: after the answer to the current request the connection
  // becomes a raw byte pipe joined to a Stream.
  // claim_raw(), from the method's handler while it runs: true when the
  // request is alone on the connection (no other request of it unanswered);
  // from then on no more lines are read, and the bytes after the request's
  // line are kept as the stream's first bytes. An error answer gives the
  // connection back to JSON-RPC (the kept bytes are read as lines).
  // Always false for a notification (no id): the pipe starts after the
  // answer line and a notification gets none (the Dispatcher marks its
  // call, ignores it and warns).
  bool claim_raw() {
    if (running_notification_) {
      raw_refused_ = true;
      return false;
    }
    return claim_raw_alone();
  }
  // Before the success answer of a claimed request: the stream the pipe is
  // joined to once the answer line is written; `buffer` bounds each way.
  virtual void attach_stream(std::unique_ptr<RawStream> stream, size_t buffer) {
    static_cast<void>(stream);
    static_cast<void>(buffer);
  }

 protected:
  // claim_raw() for a request that has an id: the connection's own rule.
  virtual bool claim_raw_alone() { return false; }

 private:
  friend class Dispatcher;
  bool running_notification_ = false;  // a notification's handler is running
  bool raw_refused_ = false;           // ... and it asked for the raw pipe
};

// A JSON-RPC error: its code (one of ErrorCode's, docs/api.md "Errors"),
// message and optional data object.
struct RpcError {
  int code = static_cast<int>(ErrorCode::kInternal);
  std::string message;
  json data;  // null: no "data" member
};

// Calls answered, by outcome (the metrics' connmgr_rpc_requests_total).
struct RequestCounts {
  uint64_t success = 0;
  uint64_t error = 0;
};

// One-shot answer of one call. Exactly one of result() / result_text() /
// error() should be called, once, on the loop thread, now or later; further
// calls are ignored. Copies share the one answer (so a Reply can be captured
// by std::function). Safe to call after the client has gone (the answer is
// dropped). When the last copy is destroyed without an answer, an internal
// error (ErrorCode::kInternal) is answered, so no request is ever forgotten.
//
// The Reply writes the answer line itself (the id spliced in as raw text,
// json_text.h), so that one allocation per call holds everything an answer
// needs, however late it comes.
class Reply {
 public:
  // Called once with the answer line (no '\n'), or with nullopt when
  // nothing is to be sent (the call was a notification).
  using Done = std::function<void(std::optional<std::string> answer)>;
  Reply() = default;
  // `id_text` is the request's id as raw JSON ("null" when it has none).
  Reply(std::string id_text, bool is_notification, Done done);

  void result(const json& value);
  // A result the method has already serialized: compact JSON text, valid
  // and free of newlines (it is spliced into the answer line unchecked).
  // For answers built mostly from cached text, such as `status`.
  void result_text(std::string_view json_text);
  void error(RpcError error);
  bool answered() const;
  // The answer, when it comes, is counted in `counts` (which must outlive
  // the Reply's copies: the Dispatcher's do).
  void count_into(RequestCounts* counts);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

struct CallContext {
  std::shared_ptr<Session> session;  // the caller's connection
  bool in_batch = false;             // the call is a member of a batch
};

// A method: its name, whether it changes state (then only privileged callers
// may call it: root, the daemon's own user and the admin group, access.h),
// and its handler. `params` is always an object (an absent params member
// arrives as {}; positional array params are refused with invalid params
// before the handler is called).
struct Method {
  std::string name;
  bool changes_state = false;
  std::function<void(const json& params, const CallContext& ctx, Reply reply)> handler;
};

}  // namespace connmgr::rpc
