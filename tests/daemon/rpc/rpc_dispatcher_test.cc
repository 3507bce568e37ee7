// The JSON-RPC 2.0 layer on its own: envelope rules, error codes, byte-exact
// ids, batches, depth limit, async answers and the permission check, fed
// lines directly (the socket tests cover the same through the server).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "rpc/dispatcher.h"
#include "rpc/raw_id.h"

namespace connmgr::rpc {
namespace {

using namespace std::string_literals;

constexpr int kNodeNotFound = static_cast<int>(ErrorCode::kNodeNotFound);

class TestSession final : public Session {
 public:
  explicit TestSession(PeerCredentials c = {}) : creds_(std::move(c)) {}
  uint64_t id() const override { return 1; }
  const PeerCredentials& credentials() const override { return creds_; }
  void notify(const json& n) override { notes.push_back(n); }
  bool closed() const override { return false; }
  CloseHookId on_close(std::function<void()>) override { return 1; }
  void forget_close_hook(CloseHookId) override {}
  std::vector<json> notes;

 private:
  PeerCredentials creds_;
};

PeerCredentials creds_of(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCredentials c;
  c.pid = 1;
  c.uid = uid;
  c.gid = gid;
  c.groups = std::move(groups);
  c.groups_known = true;
  return c;
}

struct Harness {
  Dispatcher d{AccessPolicy{0, std::nullopt}};
  std::shared_ptr<TestSession> session = std::make_shared<TestSession>(creds_of(0, 0));
  std::vector<Reply> parked;  // replies of "later", answered by the test

  Harness() {
    d.add({"echo", false, [](const json& p, const CallContext&, Reply r) { r.result(p); }});
    d.add({"later", false, [this](const json&, const CallContext&, Reply r) { parked.push_back(r); }});
    d.add({"throw", false, [](const json&, const CallContext&, Reply) -> void {
             throw std::runtime_error("boom");
           }});
    d.add({"silent", false, [](const json&, const CallContext&, Reply) {}});
    d.add({"change", true, [](const json&, const CallContext&, Reply r) { r.result("changed"); }});
    d.add({"text", false, [](const json&, const CallContext&, Reply r) {
             r.result_text(R"({"b":[1,2],"a":"x"})");
           }});
    d.add({"missing", false, [](const json&, const CallContext&, Reply r) {
             r.error(RpcError{kNodeNotFound, "node not found", json{{"node_id", "n9"}}});
           }});
  }

  // The answer line, "" for no answer, "(pending)" when not answered yet.
  std::string run(std::string_view line) {
    std::optional<std::optional<std::string>> got;
    d.handle_line(line, session, [&](std::optional<std::string> a) { got = std::move(a); });
    if (!got) return "(pending)";
    return got->value_or("");
  }
  json run_json(std::string_view line) { return json::parse(run(line)); }
};

int code_of(const json& answer) { return answer.at("error").at("code").get<int>(); }

TEST_CASE("a request is answered with its result and the jsonrpc and id members") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"2.0","id":7,"method":"echo","params":{"a":[1,"x"]}})") ==
        R"({"jsonrpc":"2.0","id":7,"result":{"a":[1,"x"]}})");
}

TEST_CASE("absent params reach the method as an empty object") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"2.0","id":1,"method":"echo"})") == R"({"jsonrpc":"2.0","id":1,"result":{}})");
}

TEST_CASE("ids are echoed byte for byte, numbers a double cannot hold included") {
  Harness h;
  for (const std::string id : {"12345678901234567890123456789", "1.50", "-0", "1E+2", "0.1e-7",
                               "18446744073709551616", "-9223372036854775809", "\"x\"",
                               R"("\u0041\/\"")", "\"caf\xc3\xa9\"", "null", "0", "-12"}) {
    INFO(id);
    const std::string answer = h.run(R"({"jsonrpc":"2.0","method":"echo","id":)" + id + "}");
    CHECK(answer == R"({"jsonrpc":"2.0","id":)" + id + R"(,"result":{}})");
  }
}

TEST_CASE("the id is found wherever it stands among the members and beside nested ids") {
  Harness h;
  CHECK(h.run(R"({"params":{"id":5,"s":"\"id\":9"},"id" : 1.0 ,"jsonrpc":"2.0","method":"echo"})") ==
        R"({"jsonrpc":"2.0","id":1.0,"result":{"id":5,"s":"\"id\":9"}})");
  CHECK(h.run(R"({"jsonrpc":"2.0","\u0069d":2.50,"method":"echo"})") ==
        R"({"jsonrpc":"2.0","id":2.50,"result":{}})");
}

TEST_CASE("the raw id scanner finds each batch member's id, or none") {
  std::vector<std::string_view> ids;
  raw_ids_of_batch(R"([ {"id":1.0}, 3, {"x":{"id":2}}, {"id":"a]"} ,[{"id":4}]])", ids);
  REQUIRE(ids.size() == 5);
  CHECK(ids[0] == "1.0");
  CHECK(ids[1].empty());
  CHECK(ids[2].empty());
  CHECK(ids[3] == "\"a]\"");
  CHECK(ids[4].empty());
  CHECK(raw_id_of_object(R"({"id":1,"id":-0})") == "-0");  // the last, as the parser keeps
}

TEST_CASE("a notification runs but is not answered") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"2.0","method":"echo"})").empty());
  CHECK(h.run(R"({"jsonrpc":"2.0","method":"no.such"})").empty());
  CHECK(h.run(R"({"jsonrpc":"2.0","method":"throw"})").empty());
}

TEST_CASE("invalid JSON is a parse error with a null id") {
  Harness h;
  for (const std::string& line : std::vector<std::string>{"{", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"", "nul",
                                 "{\"a\":1}}", "\"\xff\xfe\"", "{\"id\":\"\xc3\x28\"}",
                                 "{\"id\":1,\0\"method\":\"echo\"}"s,
                                 "{\"id\":\"a\0b\"}"s, "[1,]", "{'id':1}"}) {
    INFO(line);
    const json a = h.run_json(line);
    CHECK(code_of(a) == kParseError);
    CHECK(a.at("id").is_null());
  }
}

TEST_CASE("a line with a NUL byte after a valid value is a parse error, not the value") {
  Harness h;
  for (const std::string& line : {"123\0"s, R"({"jsonrpc":"2.0","id":1,"method":"echo"})"s + "\0garbage"s,
                                  R"([{"jsonrpc":"2.0","id":1,"method":"echo"}])"s + "\0"s}) {
    INFO(json(line).dump());
    const json a = h.run_json(line);
    CHECK(code_of(a) == kParseError);
    CHECK(a.at("id").is_null());
  }
}

TEST_CASE("envelope errors are invalid requests") {
  Harness h;
  struct Case {
    const char* line;
    const char* id;
  };
  for (const Case c : {Case{R"({"id":1,"method":"echo"})", "1"},
                       Case{R"({"jsonrpc":"1.0","id":1,"method":"echo"})", "1"},
                       Case{R"({"jsonrpc":2.0,"id":1,"method":"echo"})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":1,"method":7})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":1})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":1,"method":"echo","params":3})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":1,"method":"echo","params":"x"})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":1,"method":"echo","extra":1})", "1"},
                       Case{R"({"jsonrpc":"2.0","id":{},"method":"echo"})", "null"},
                       Case{R"({"jsonrpc":"2.0","id":[1],"method":"echo"})", "null"},
                       Case{R"({"jsonrpc":"2.0","id":true,"method":"echo"})", "null"},
                       Case{R"({"jsonrpc":"2.0","method":1,"params":"bar"})", "null"},
                       Case{"42", "null"}, Case{"\"text\"", "null"}, Case{"null", "null"}}) {
    INFO(c.line);
    const json a = h.run_json(c.line);
    CHECK(code_of(a) == kInvalidRequest);
    CHECK(a.at("id").dump() == c.id);
    CHECK(a.at("jsonrpc") == "2.0");
  }
}

TEST_CASE("repeated members: the last one counts, as in the parsed document") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"id":2,"method":"x","method":"echo",)"
              R"("params":{"a":1},"params":{"b":[2]}})") ==
        R"({"jsonrpc":"2.0","id":2,"result":{"b":[2]}})");
  CHECK(code_of(h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"echo","method":7})")) == kInvalidRequest);
  CHECK(h.run_json(R"({"jsonrpc":"2.0","id":[1],"id":3,"method":"echo"})")["id"] == 3);
  CHECK(h.run_json(R"({"jsonrpc":"2.0","id":3,"id":[1],"method":"echo"})")["id"].is_null());
}

TEST_CASE("of several unknown members the first in byte order is named") {
  Harness h;
  const json a = h.run_json(R"({"jsonrpc":"2.0","id":1,"zeta":1,"method":"echo","beta":{"x":[1]},"Gamma":2})");
  CHECK(code_of(a) == kInvalidRequest);
  CHECK(a["error"]["message"] == "invalid request: unknown member \"Gamma\"");
}

TEST_CASE("escaped member names are the members they spell") {
  Harness h;
  CHECK(h.run(R"({"j\u0073onrpc":"2.0","\u0069d":5,"\u006dethod":"ech\u006f","params":{"k":"\u00e9"}})") ==
        "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"k\":\"\xc3\xa9\"}}");
}

TEST_CASE("a result the method serialized itself is spliced in as is") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"2.0","id":"t","method":"text"})") ==
        R"({"jsonrpc":"2.0","id":"t","result":{"b":[1,2],"a":"x"}})");
  CHECK(h.run(R"({"jsonrpc":"2.0","method":"text"})").empty());
}

TEST_CASE("an unknown method is method-not-found naming it in data") {
  Harness h;
  const json a = h.run_json(R"({"jsonrpc":"2.0","id":"q","method":"no.such"})");
  CHECK(code_of(a) == kMethodNotFound);
  CHECK(a["error"]["data"] == json{{"method", "no.such"}});
  CHECK(a["id"] == "q");
}

TEST_CASE("positional params are refused with invalid params") {
  Harness h;
  const json a = h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":[1,2]})");
  CHECK(code_of(a) == kInvalidParams);
  CHECK(a["error"]["message"].get<std::string>().find("params must be an object") != std::string::npos);
}

TEST_CASE("a method that throws is answered an internal error with its message") {
  Harness h;
  const json a = h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"throw"})");
  CHECK(code_of(a) == kInternalError);
  CHECK(a["error"]["message"].get<std::string>().find("boom") != std::string::npos);
}

TEST_CASE("a method that drops its reply unanswered yields an internal error, not silence") {
  Harness h;
  CHECK(code_of(h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"silent"})")) == kInternalError);
}

TEST_CASE("server errors pass through with their data") {
  Harness h;
  CHECK(h.run(R"({"jsonrpc":"2.0","id":3,"method":"missing"})") ==
        R"({"jsonrpc":"2.0","id":3,"error":{"code":)" + std::to_string(kNodeNotFound) + R"(,"message":"node not found","data":{"node_id":"n9"}}})");
}

TEST_CASE("an async method answers after handle_line returned, once") {
  Harness h;
  std::vector<std::string> answers;
  for (const char* id : {"1.50", "2"})
    h.d.handle_line(std::string(R"({"jsonrpc":"2.0","method":"later","id":)") + id + "}", h.session,
                    [&](std::optional<std::string> a) { answers.push_back(a.value_or("")); });
  CHECK(answers.empty());
  REQUIRE(h.parked.size() == 2);
  h.parked[1].result(json{{"ok", true}});
  h.parked[1].error(RpcError{kNodeNotFound, "late", nullptr});  // ignored: answered already
  CHECK(h.parked[1].answered());
  REQUIRE(answers.size() == 1);
  CHECK(answers[0] == R"({"jsonrpc":"2.0","id":2,"result":{"ok":true}})");
  // The last copy of an unanswered Reply answers kInternalError as it goes.
  h.parked.clear();
  REQUIRE(answers.size() == 2);
  CHECK(answers[1] ==
        R"({"jsonrpc":"2.0","id":1.50,"error":{"code":)" + std::to_string(kInternalError) + R"(,"message":"internal error: the method gave no answer"}})");
}

TEST_CASE("a batch is answered by one array in order of the members") {
  Harness h;
  const std::string line =
      R"([{"jsonrpc":"2.0","id":1,"method":"echo","params":{"n":1}},)"
      R"({"jsonrpc":"2.0","method":"echo"},)"
      R"({"jsonrpc":"2.0","id":"b","method":"no.such"},)"
      R"(1,)"
      R"({"jsonrpc":"2.0","id":12345678901234567890,"method":"missing"}])";
  const json a = h.run_json(line);
  REQUIRE(a.is_array());
  REQUIRE(a.size() == 4);
  CHECK(a[0]["result"] == json{{"n", 1}});
  CHECK(code_of(a[1]) == kMethodNotFound);
  CHECK(a[1]["id"] == "b");
  CHECK(code_of(a[2]) == kInvalidRequest);
  CHECK(a[2]["id"].is_null());
  CHECK(code_of(a[3]) == kNodeNotFound);
  CHECK(h.run(line).find(R"("id":12345678901234567890,)") != std::string::npos);
}

TEST_CASE("an empty batch is a single invalid request, not an array") {
  Harness h;
  const json a = h.run_json("[]");
  CHECK(a.is_object());
  CHECK(code_of(a) == kInvalidRequest);
  CHECK(h.run_json(" [ ] ").is_object());
}

TEST_CASE("a batch of only notifications gets no line at all") {
  Harness h;
  CHECK(h.run(R"([{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","method":"no.such"}])").empty());
}

TEST_CASE("a batch of invalid members gets an invalid request for each") {
  Harness h;
  const json a = h.run_json("[1,2,3]");
  REQUIRE(a.size() == 3);
  for (const auto& e : a) CHECK(code_of(e) == kInvalidRequest);
  CHECK(code_of(h.run_json("[1]")[0]) == kInvalidRequest);
}

TEST_CASE("a batch waits for its async members") {
  Harness h;
  std::optional<std::string> got;
  bool called = false;
  h.d.handle_line(R"([{"jsonrpc":"2.0","id":1,"method":"later"},{"jsonrpc":"2.0","id":2,"method":"echo"}])",
                  h.session, [&](std::optional<std::string> a) {
                    called = true;
                    got = std::move(a);
                  });
  CHECK_FALSE(called);
  REQUIRE(h.parked.size() == 1);
  h.parked[0].result(5);
  REQUIRE(called);
  CHECK(*got == R"([{"jsonrpc":"2.0","id":1,"result":5},{"jsonrpc":"2.0","id":2,"result":{}}])");
}

TEST_CASE("nesting deeper than 64 levels is an invalid request; 64 is served") {
  Harness h;
  auto nested = [](int depth) {
    // The request object is level 1; params adds one; arrays the rest.
    std::string inner(static_cast<size_t>(depth - 2), '[');
    inner += std::string(static_cast<size_t>(depth - 2), ']');
    return R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"x":)" + inner + "}}";
  };
  CHECK(h.run_json(nested(64)).contains("result"));
  const json a = h.run_json(nested(65));
  CHECK(code_of(a) == kInvalidRequest);
  CHECK(code_of(h.run_json(std::string(100000, '['))) == kInvalidRequest);
}

TEST_CASE("a method that changes state is refused to a caller who is not privileged") {
  Harness h;
  h.session = std::make_shared<TestSession>(creds_of(1234, 1234));
  const json a = h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"change"})");
  CHECK(code_of(a) == kPermissionDenied);
  CHECK(a["error"]["message"] ==
        "permission denied: change changes state; uid 1234 is not root or the daemon's user, and no "
        "admin_group is configured");
  CHECK(a["error"]["data"]["uid"] == 1234);
  // Reading methods stay open.
  CHECK(h.run_json(R"({"jsonrpc":"2.0","id":1,"method":"echo"})").contains("result"));
}

TEST_CASE("the permission rule: root, the daemon's uid, or the admin group") {
  const AccessPolicy policy{1000, gid_t{50}};
  CHECK(may_change_state(creds_of(0, 0), policy, {}));
  CHECK(may_change_state(creds_of(1000, 1000), policy, {}));
  CHECK(may_change_state(creds_of(2000, 50), policy, {}));       // primary group
  CHECK(may_change_state(creds_of(2000, 2000), policy, {7, 50}));  // supplementary
  CHECK_FALSE(may_change_state(creds_of(2000, 2000), policy, {7, 51}));
  CHECK_FALSE(may_change_state(creds_of(2000, 2000), AccessPolicy{1000, std::nullopt}, {50}));
  CHECK(permission_denied_message("connect", creds_of(2000, 2000), policy) ==
        "permission denied: connect changes state; uid 2000 is not root, the daemon's user, or in "
        "admin group 50");
}

TEST_CASE("the groups a peer's kernel credentials carry decide, else /proc, else passwd") {
  PeerCredentials c = creds_of(2000, 2000, {50});
  CHECK(may_change_state(c, AccessPolicy{1000, gid_t{50}}));
  CHECK_FALSE(may_change_state(c, AccessPolicy{1000, gid_t{51}}));
  // Unknown to the kernel: /proc/PID/status of the peer, here this process.
  c.groups_known = false;
  c.groups.clear();
  c.pid = getpid();
  std::vector<gid_t> mine(static_cast<size_t>(getgroups(0, nullptr)));
  getgroups(static_cast<int>(mine.size()), mine.data());
  auto groups = peer_groups(c);
  std::sort(groups.begin(), groups.end());
  std::sort(mine.begin(), mine.end());
  CHECK(groups == mine);
  // No process to ask: the groups of the uid's passwd entry (root is in 0).
  PeerCredentials root;
  root.uid = 0;
  const auto root_groups = peer_groups(root);
  CHECK(std::find(root_groups.begin(), root_groups.end(), gid_t{0}) != root_groups.end());
}

TEST_CASE("a custom privilege check decides in place of the policy") {
  Dispatcher d([](const PeerCredentials& c) { return c.uid == 42; });
  d.add({"change", true, [](const json&, const CallContext&, Reply r) { r.result(1); }});
  auto run = [&](uid_t uid) {
    std::string out;
    d.handle_line(R"({"jsonrpc":"2.0","id":1,"method":"change"})",
                  std::make_shared<TestSession>(creds_of(uid, uid)),
                  [&](std::optional<std::string> a) { out = a.value_or(""); });
    return json::parse(out);
  };
  CHECK(run(42)["result"] == 1);
  CHECK(code_of(run(0)) == kPermissionDenied);
}

}  // namespace
}  // namespace connmgr::rpc

namespace connmgr::rpc {
namespace {

TEST_CASE("answers are counted by method and outcome", "[dispatcher][metrics]") {
  Harness h;
  auto counts = [&](std::string_view name) { return h.d.request_counts().find(name)->second; };
  h.run(R"({"jsonrpc":"2.0","id":1,"method":"echo"})");
  h.run(R"({"jsonrpc":"2.0","method":"echo"})");  // a notification counts too
  h.run(R"({"jsonrpc":"2.0","id":2,"method":"missing"})");
  h.run(R"({"jsonrpc":"2.0","id":3,"method":"throw"})");
  h.run(R"({"jsonrpc":"2.0","id":4,"method":"silent"})");  // no answer: an internal error
  h.run(R"({"jsonrpc":"2.0","id":5,"method":"echo","params":[1]})");
  h.run(R"({"jsonrpc":"2.0","id":6,"method":"nosuch"})");
  h.run(R"({"jsonrpc":"2.0","id":7,"method":"nosuch2"})");
  h.run("{not json");
  h.run("[]");
  h.run(R"([{"jsonrpc":"2.0","id":8,"method":"echo"},{"jsonrpc":"1.0","id":9,"method":"echo"}])");
  // Answered after the call returns: its `done` must outlive the call.
  auto late = std::make_shared<std::optional<std::string>>();
  h.d.handle_line(R"({"jsonrpc":"2.0","id":10,"method":"later"})", h.session,
                  [late](std::optional<std::string> a) { *late = std::move(a); });
  CHECK(counts("echo").success == 3);
  CHECK(counts("echo").error == 1);
  CHECK(counts("missing").error == 1);
  CHECK(counts("throw").error == 1);
  CHECK(counts("silent").error == 1);
  CHECK(counts("unknown").error == 2);  // no entry per unknown name
  CHECK(h.d.request_counts().count("nosuch") == 0);
  CHECK(counts("invalid").error == 3);
  CHECK(counts("later").success == 0);  // not answered yet
  h.parked.front().result(1);
  CHECK(counts("later").success == 1);
  CHECK(late->has_value());
  CHECK(counts("change").success == 0);  // every method has its entry from the start
}

}  // namespace
}  // namespace connmgr::rpc
