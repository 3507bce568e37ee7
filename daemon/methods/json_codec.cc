#include "methods/json_codec.h"

#include "rpc/json_text.h"
#include "util/clock.h"

namespace connmgr::methods {

using rpc::json;

namespace {

json opt(const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); }
json opt_time(const std::optional<int64_t>& v) {
  return v ? json(format_rfc3339_ms(*v)) : json(nullptr);
}

// status.network's and nodes.explain's parts.
json class_json(const ClassStatus& c) {
  return json{{"state", c.state}, {"last_success_at", opt_time(c.last_success_at)}};
}

json classes_json(const NetworkStatus& n) {
  json classes = json::object();
  for (size_t i = 0; i < kAddressClasses; ++i)
    classes[std::string(address_class_name(static_cast<AddressClass>(i)))] = class_json(n.classes[i]);
  return classes;
}

json candidate_json(const Candidate& c) {
  json why = json::array();
  for (const auto& w : c.why) why.push_back(w);
  return json{
      {"endpoint", to_json(c.endpoint)},
      {"rank", c.rank ? json(*c.rank) : json(nullptr)},
      {"eligible", c.eligible},
      {"why", std::move(why)},
      {"race_offset_ms", c.race_offset_ms ? json(*c.race_offset_ms) : json(nullptr)},
  };
}

json attempt_json(const AttemptRecord& a) {
  return json{
      {"at", format_rfc3339_ms(a.at)},
      {"endpoint_id", a.endpoint_id},
      {"outcome", a.outcome},
      {"reason", opt(a.reason)},
      {"charged", a.charged},
  };
}

}  // namespace

json to_json(const Endpoint& e) {
  return json{
      {"id", e.id},
      {"node_id", e.node_id},
      {"protocol", e.protocol},
      {"address", e.address},
      {"port", e.port},
      {"server_name", opt(e.server_name)},
      {"alpn", opt(e.alpn)},
      {"pin_sha256", opt(e.pin_sha256)},
      {"success_count", e.success_count},
      {"failure_count", e.failure_count},
      {"last_success_at", opt_time(e.last_success_at)},
      {"last_failure_at", opt_time(e.last_failure_at)},
      {"last_error", opt(e.last_error)},
      {"rtt_ms", e.rtt_ms ? json(*e.rtt_ms) : json(nullptr)},
      {"consecutive_failures", e.consecutive_failures},
      {"uncharged_failure_count", e.uncharged_failure_count},
  };
}

json to_json(const Node& n, bool connected) {
  return json{
      {"id", n.id},
      {"name", opt(n.name)},
      {"created_at", format_rfc3339_ms(n.created_at)},
      {"connected", connected},
  };
}

json to_json(const NodeWithEndpoints& n, bool connected) {
  json j = to_json(n.node, connected);
  json list = json::array();
  for (const auto& e : n.endpoints) list.push_back(to_json(e));
  j["endpoints"] = std::move(list);
  return j;
}

json to_json(const LinkInfo& l) {
  json j{
      {"node_id", l.node_id},
      {"endpoint_id", l.endpoint_id == 0 ? json(nullptr) : json(l.endpoint_id)},
      {"protocol", l.protocol.empty() ? json(nullptr) : json(l.protocol)},
      {"address", l.address.empty() ? json(nullptr) : json(l.address)},
      {"port", l.port == 0 ? json(nullptr) : json(l.port)},
      {"local_address", l.local_address.empty() ? json(nullptr) : json(l.local_address)},
      {"state", std::string(link_state_name(l.state))},
      {"since", format_rfc3339_ms(l.since)},
      {"attempts", l.attempts},
      {"rtt_ms", l.rtt_ms ? json(*l.rtt_ms) : json(nullptr)},
      {"reconnect", l.reconnect},
      {"streams", l.streams},
      {"bytes_in", l.bytes_in},
      {"bytes_out", l.bytes_out},
  };
  if (l.next_attempt_at) j["next_attempt_at"] = format_rfc3339_ms(*l.next_attempt_at);
  return j;
}

json to_json(const Event& e) {
  json j{
      {"type", std::string(event_type_name(e.type))},
      {"at", format_rfc3339_ms(e.at)},
  };
  // Events tied to no node (network_changed) have no node_id key at all.
  if (!e.node_id.empty()) j["node_id"] = e.node_id;
  if (e.endpoint_id) j["endpoint_id"] = *e.endpoint_id;
  if (e.protocol) j["protocol"] = *e.protocol;
  if (e.reason) j["reason"] = *e.reason;
  if (e.attempt) j["attempt"] = *e.attempt;
  if (e.delay_ms) j["delay_ms"] = *e.delay_ms;
  if (e.next_attempt_at) j["next_attempt_at"] = format_rfc3339_ms(*e.next_attempt_at);
  if (e.stream_id) j["stream_id"] = *e.stream_id;
  if (e.bytes_in) j["bytes_in"] = *e.bytes_in;
  if (e.bytes_out) j["bytes_out"] = *e.bytes_out;
  if (e.race_offset_ms) j["race_offset_ms"] = *e.race_offset_ms;
  if (e.generation) j["generation"] = *e.generation;
  if (e.revision) j["revision"] = *e.revision;
  if (e.kind) j["kind"] = *e.kind;
  return j;
}

json to_json(const StreamInfo& s) {
  return json{
      {"stream_id", s.stream_id},
      {"node_id", s.node_id},
      {"endpoint_id", s.endpoint_id},
      {"protocol", s.protocol},
      {"opened_at", format_rfc3339_ms(s.opened_at)},
      {"bytes_in", s.bytes_in},
      {"bytes_out", s.bytes_out},
      {"client", json{{"pid", s.client.pid}, {"uid", s.client.uid}}},
  };
}

json to_json(const NetworkStatus& n) {
  return json{{"generation", n.generation}, {"classes", classes_json(n)}};
}

void append_network_json(std::string& out, const NetworkStatus& n) {
  // Keys in a nlohmann object's (alphabetical) order: classes, generation;
  // last_success_at, state. The class names and states need no escaping.
  out += R"({"classes":{)";
  for (size_t i = 0; i < kAddressClasses; ++i) {
    if (i != 0) out += ',';
    out += '"';
    out += address_class_name(static_cast<AddressClass>(i));
    out += R"(":{"last_success_at":)";
    const auto& c = n.classes[i];
    if (c.last_success_at) {
      out += '"';
      out += format_rfc3339_ms(*c.last_success_at);
      out += '"';
    } else {
      out += "null";
    }
    out += R"(,"state":")";
    out += c.state;  // "up", "down" or "unknown": nothing to escape, no json value per call
    out += R"("})";
  }
  out += R"(},"generation":)";
  out += std::to_string(n.generation);
  out += '}';
}

json to_json(const Explanation& x) {
  json candidates = json::array();
  for (const auto& c : x.candidates) candidates.push_back(candidate_json(c));
  json recent = json::array();
  for (const auto& a : x.recent) recent.push_back(attempt_json(a));
  json backoff = nullptr;
  if (x.backoff)
    backoff = json{{"attempt", x.backoff->attempt},
                   {"delay_ms", x.backoff->delay_ms},
                   {"next_attempt_at", format_rfc3339_ms(x.backoff->next_attempt_at)}};
  return json{
      {"node_id", x.node_id},
      {"decision", std::string(decision_name(x.decision))},
      {"link", x.link ? to_json(*x.link) : json(nullptr)},
      {"candidates", std::move(candidates)},
      {"classes", classes_json(x.network)},
      {"backoff", std::move(backoff)},
      {"recent", std::move(recent)},
  };
}

json event_notification(const Event& e) {
  return json{{"jsonrpc", "2.0"}, {"method", "event"}, {"params", to_json(e)}};
}

rpc::RpcError to_rpc_error(const Error& error, json details) {
  rpc::RpcError out;
  out.code = error.rpc_code();
  out.message = error.message();
  // Server codes always carry a data object; standard codes only when there
  // is something to say.
  const bool server_code = out.code >= kServerErrorFirst && out.code <= kServerErrorLast;
  json data = details.is_object() ? std::move(details) : json::object();
  if (!error.reason().empty() && !data.contains("reason")) data["reason"] = error.reason();
  if (server_code || !data.empty()) out.data = std::move(data);
  return out;
}

rpc::RpcError connect_failed_error(const Error& error, const ConnectFailure& f) {
  json data{
      {"endpoint_id", f.endpoint_id},
      {"attempts", f.attempts},
      {"reason", f.reason},
      {"retry_scheduled", f.retry_scheduled},
  };
  if (f.next_attempt_at) data["next_attempt_at"] = format_rfc3339_ms(*f.next_attempt_at);
  return to_rpc_error(error, std::move(data));
}

}  // namespace connmgr::methods
