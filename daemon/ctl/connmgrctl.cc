// connmgrctl: the command-line client of connmgrd (docs/api.md; its man page
// is docs/man/connmgrctl.1.scd). A thin, blocking client: one request line
// out, one answer line back (or a stream of event notifications for `watch`).
// Tables for people, --json for scripts.
//
// Its commands are the table kVerbs below, one handler each (verb_NAME);
// --help, the usage errors and the bash completion derive from the table
// (verbs.h). The socket and the request/answer exchange are client.h; tables,
// times and colour for people are table.h.
//
// Exit status: 0 on success, 1 on an error answer (message on stderr),
// 2 on a usage error, 3 when the daemon cannot be reached.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "connmgr_version.h"
#include "daemon/ctl/client.h"
#include "daemon/ctl/splice.h"
#include "daemon/ctl/table.h"
#include "daemon/ctl/verbs.h"

namespace {

using json = nlohmann::json;
using connmgr::ctl::Arguments;
using connmgr::ctl::call;
using connmgr::ctl::Completion;
using connmgr::ctl::Connection;
using connmgr::ctl::default_socket;
using connmgr::ctl::describe_error;
using connmgr::ctl::Flag;
using connmgr::ctl::human_time;
using connmgr::ctl::kExitError;
using connmgr::ctl::kUnlimited;
using connmgr::ctl::Options;
using connmgr::ctl::paint;
using connmgr::ctl::print_table;
using connmgr::ctl::text;
using connmgr::ctl::usage_error;
using connmgr::ctl::Verb;
using connmgr::ctl::Verbs;

// --- output for people -------------------------------------------------------------

void print_endpoints(const json& eps) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : eps)
    rows.push_back({text(e["id"]), text(e["protocol"]), text(e["address"]), text(e["port"]),
                    text(e["success_count"]), text(e["failure_count"]), human_time(e["last_success_at"]),
                    text(e["last_error"])});
  print_table({"ID", "PROTO", "ADDRESS", "PORT", "OK", "FAIL", "LAST OK", "LAST ERROR"}, rows);
}

void print_links(const json& links) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : links) {
    std::string state = text(l["state"]);
    state = state == "active" ? paint(state, "32") : paint(state, "33");
    std::string since = human_time(l["since"]);
    if (l.contains("next_attempt_at")) since = "next " + human_time(l["next_attempt_at"]);
    rows.push_back({text(l["node_id"]), state, text(l["protocol"]),
                    text(l["address"]) + ":" + text(l["port"]), text(l["local_address"]), since,
                    text(l["attempts"]), l["rtt_ms"].is_null() ? "-" : text(l["rtt_ms"]) + " ms"});
  }
  print_table({"NODE", "STATE", "PROTO", "REMOTE", "LOCAL", "SINCE", "ATTEMPTS", "RTT"}, rows);
}

// An event tied to no node (network_changed) has no node_id.
std::string event_line(const json& e) {
  std::string line = text(e["at"]) + "  " + paint(text(e["type"]), "1");
  for (const char* k : {"node_id", "endpoint_id", "protocol", "reason", "attempt", "delay_ms", "next_attempt_at",
                        "race_offset_ms", "generation", "revision", "kind", "stream_id", "bytes_in",
                        "bytes_out"})
    if (e.contains(k)) line += std::string("  ") + (k == std::string("node_id") ? "node" : k) + "=" + text(e[k]);
  return line;
}

void print_event(const json& e) {
  printf("%s\n", event_line(e).c_str());
  fflush(stdout);
}

// connect --wait's account of its attempts, from the events of the node (or
// endpoint) being connected.
class AttemptProgress {
 public:
  AttemptProgress(const json& params, long long max_attempts) : max_attempts_(max_attempts) {
    if (params.contains("node_id")) node_ = params["node_id"].get<std::string>();
    if (params.contains("endpoint_id")) endpoint_ = params["endpoint_id"].get<long long>();
  }

  void show(const json& e) {
    if (!ours(e)) return;
    const std::string type = e.value("type", "");
    const std::string of = max_attempts_ > 0 ? "/" + std::to_string(max_attempts_) : "";
    const std::string attempt = e.contains("attempt") ? text(e["attempt"]) + of : "?";
    const std::string via = e.contains("endpoint_id")
                                ? " via endpoint " + text(e["endpoint_id"]) +
                                      (e.contains("protocol") ? " (" + text(e["protocol"]) + ")" : "")
                                : "";
    if (type == "connecting") {
      fprintf(stderr, "attempt %s%s ...\n", attempt.c_str(), via.c_str());
    } else if (type == "connect_failed") {
      fprintf(stderr, "attempt %s%s failed: %s\n", attempt.c_str(), via.c_str(),
              paint(text(e["reason"]), "31").c_str());
    } else if (type == "retry_scheduled" && e.contains("delay_ms")) {
      fprintf(stderr, "  next try in %s\n", human_delay(e["delay_ms"].get<long long>()).c_str());
    }
  }

 private:
  bool ours(const json& e) {
    if (node_) return e.value("node_id", "") == *node_;
    // By endpoint: learn the node from the endpoint's first event.
    if (e.contains("endpoint_id") && e["endpoint_id"] == *endpoint_) {
      node_ = e.value("node_id", "");
      return true;
    }
    return false;
  }

  static std::string human_delay(long long ms) {
    char buf[32];
    if (ms < 1000) snprintf(buf, sizeof buf, "%lldms", ms);
    else if (ms < 60000) snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
    else snprintf(buf, sizeof buf, "%lldm%llds", ms / 60000, (ms % 60000) / 1000);
    return buf;
  }

  std::optional<std::string> node_;
  std::optional<long long> endpoint_;
  long long max_attempts_;
};

// `watch` on a terminal: the links table, redrawn at every event and every
// second, over the latest events. Ctrl-C ends it (exit 0 at the daemon's stop).
int live_view(const Options& o, const json& subscribe_params) {
  constexpr size_t kKeep = 12;
  Connection events(o.socket, 1.0);  // receive() returns every second at most
  events.send(json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "events.subscribe"}, {"params", subscribe_params}});
  std::deque<std::string> recent;
  for (;;) {
    const json links = call(o, "connections.list", {{"include_pending", true}})["connections"];
    size_t active = 0;
    for (const auto& l : links) active += l.value("state", "") == "active";
    char clock[16];
    const time_t now = time(nullptr);
    strftime(clock, sizeof clock, "%H:%M:%S", localtime(&now));
    printf("\033[H\033[2J%s  %zu active, %zu pending  (%s, Ctrl-C ends)\n\n", paint("connmgrd", "1").c_str(), active,
           links.size() - active, clock);
    print_links(links);
    printf("\n%s\n", paint("latest events", "1").c_str());
    for (const auto& line : recent) printf("%s\n", line.c_str());
    fflush(stdout);
    // Until an event or a second passes; several events at once are drawn once.
    auto msg = events.receive();
    if (!msg && !events.timed_out()) return 0;  // the daemon stopped
    while (msg) {
      if (msg->value("method", "") == "event" && msg->contains("params")) {
        recent.push_back(event_line((*msg)["params"]));
        if (recent.size() > kKeep) recent.pop_front();
      } else if (msg->contains("error")) {
        fprintf(stderr, "connmgrctl: %s\n", describe_error((*msg)["error"]).c_str());
        return kExitError;
      }
      if (!events.has_line()) break;
      msg = events.receive();
    }
  }
}

// --- argument helpers ------------------------------------------------------------------

long long number(const std::string& s, const std::string& what) {
  char* end = nullptr;
  long long v = strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end) usage_error(what + " must be a number, got '" + s + "'");
  return v;
}

// "5s", "500ms", "1m", "2h", or a bare number of seconds (as connmgrd's
// configuration reads durations) -> milliseconds.
long long duration_ms(const std::string& s, const std::string& what) {
  char* end = nullptr;
  const double v = strtod(s.c_str(), &end);
  const std::string unit = end ? end : "";
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m") scale = 60000;
  else if (unit == "h") scale = 3600000;
  if (s.empty() || end == s.c_str() || scale == 0 || !(v > 0))
    usage_error(what + " must be a positive duration such as 5s or 500ms, got '" + s + "'");
  const double ms = v * scale;
  return ms < 1 ? 1 : static_cast<long long>(ms);
}

// "tcp://127.0.0.1:80", "quic://[::1]:443" -> endpoint params.
json parse_endpoint(const std::string& spec) {
  const auto sep = spec.find("://");
  if (sep == std::string::npos) usage_error("endpoint must look like PROTO://HOST:PORT, got '" + spec + "'");
  std::string proto = spec.substr(0, sep), rest = spec.substr(sep + 3), host;
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) usage_error("endpoint needs a port: '" + spec + "'");
  host = rest.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string::npos)
    usage_error("an IPv6 address goes in brackets, as quic://[::1]:443, got '" + spec + "'");
  if (proto.empty() || host.empty()) usage_error("endpoint must look like PROTO://HOST:PORT, got '" + spec + "'");
  return json{{"protocol", proto}, {"address", host}, {"port", number(rest.substr(colon + 1), "port")}};
}

// Prints the result as one line of JSON (--json) or for people; exit status 0.
template <typename ForPeople>
int show(const Options& o, const json& result, ForPeople&& for_people) {
  if (o.json_output) printf("%s\n", result.dump().c_str());
  else for_people(result);
  return 0;
}

// --- the commands: one handler each, named verb_NAME ---------------------------------------

std::string help_text();  // from the table, below

int verb_help(Options&, const Arguments&) {
  fputs(help_text().c_str(), stdout);
  return 0;
}

// The exposition as the daemon wrote it (text format 0.0.4): ready for
// promtool, grep or a textfile of one's own.
int verb_metrics(Options& o, const Arguments&) {
  return show(o, call(o, "metrics", json::object()),
              [](const json& r) { fputs(text(r["text"]).c_str(), stdout); });
}

int verb_status(Options& o, const Arguments&) {
  return show(o, call(o, "status", json::object()), [](const json& r) {
    printf("connmgrd %s, node %s, up %llds\n", text(r["version"]).c_str(), text(r["node_id"]).c_str(),
           r["uptime_s"].get<long long>());
    printf("database  %s\nsocket    %s\nprotocols %s\n", text(r["database"]).c_str(), text(r["socket"]).c_str(),
           r["connectors"].dump().c_str());
    const json& c = r["counts"];
    printf("nodes %s, endpoints %s, links %s active / %s pending, clients %s\n", text(c["nodes"]).c_str(),
           text(c["endpoints"]).c_str(), text(c["active"]).c_str(), text(c["pending"]).c_str(),
           text(c["clients"]).c_str());
    if (r.contains("network")) {
      const json& n = r["network"];
      std::string classes;
      for (const auto& [name, cl] : n["classes"].items())
        classes += (classes.empty() ? "" : ", ") + name + " " + text(cl["state"]);
      printf("network   %s change(s) seen; %s\n", text(n["generation"]).c_str(), classes.c_str());
    }
    // A fleet's shared inventory; the local one (the default) says nothing new.
    if (r.contains("inventory") && r["inventory"]["backend"] != "local") {
      const json& inv = r["inventory"];
      printf("inventory %s %s, revision %s, lag %ss%s\n", text(inv["backend"]).c_str(), text(inv["state"]).c_str(),
             text(inv["revision"]).c_str(), text(inv["lag_s"]).c_str(),
             inv.contains("last_error") ? (" (" + text(inv["last_error"]) + ")").c_str() : "");
    }
  });
}

int verb_nodes(Options& o, const Arguments& a) {
  json p = json::object();
  if (auto l = a.value("--limit")) p["limit"] = number(*l, "--limit");
  if (auto after = a.value("--after")) p["after"] = *after;
  return show(o, call(o, "nodes.list", p), [](const json& r) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& n : r["nodes"])
      rows.push_back({text(n["id"]), text(n["name"]), n["connected"].get<bool>() ? paint("up", "32") : "-",
                      human_time(n["created_at"])});
    print_table({"ID", "NAME", "LINK", "CREATED"}, rows);
    if (!r["next"].is_null()) printf("more: connmgrctl nodes --after %s\n", text(r["next"]).c_str());
  });
}

int verb_node(Options& o, const Arguments& a) {
  return show(o, call(o, "nodes.get", {{"node_id", a.positional[0]}}), [](const json& n) {
    printf("%s  %s  %s\n", text(n["id"]).c_str(), text(n["name"]).c_str(),
           n["connected"].get<bool>() ? "linked" : "not linked");
    print_endpoints(n["endpoints"]);
  });
}

int verb_endpoints(Options& o, const Arguments& a) {
  json p{{"node_id", a.positional[0]}};
  if (auto protocol = a.value("--protocol")) p["protocol"] = *protocol;
  return show(o, call(o, "endpoints.list", p), [](const json& r) { print_endpoints(r["endpoints"]); });
}

// --- explain: what connect would do for a node, and why -----------------------------------

std::string decision_words(const std::string& decision) {
  if (decision == "reuse") return "connect would reuse the active link";
  if (decision == "join") return "connect would join the attempt under way";
  if (decision == "dial") return "connect would dial now, in the order below";
  if (decision == "wait_retry") return "a retry is scheduled (backoff below)";
  if (decision == "no_endpoint") return "no usable endpoint: connect would fail";
  return decision;
}

std::string link_words(const json& l) {
  if (l.is_null()) return "none";
  std::string s = text(l["state"]);
  if (!l["protocol"].is_null()) s += " via " + text(l["protocol"]) + " " + text(l["address"]) + ":" + text(l["port"]);
  if (!l["endpoint_id"].is_null()) s += " (endpoint " + text(l["endpoint_id"]) + ")";
  s += ", since " + human_time(l["since"]) + ", " + text(l["attempts"]) + " attempt(s)";
  if (l.contains("next_attempt_at")) s += ", next " + human_time(l["next_attempt_at"]);
  return s;
}

std::string address_of(const json& e) {
  const std::string host = text(e["address"]);
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + text(e["port"]);
}

void print_candidates(const json& candidates) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : candidates) {
    const json& e = c["endpoint"];
    std::string why;
    for (const auto& w : c["why"]) why += (why.empty() ? "" : "; ") + text(w);
    const bool eligible = c["eligible"].get<bool>();
    rows.push_back({text(c["rank"]), eligible ? paint("yes", "32") : paint("no", "33"), text(e["id"]),
                    text(e["protocol"]), address_of(e),
                    c["race_offset_ms"].is_null() ? "-" : "+" + text(c["race_offset_ms"]) + "ms",
                    text(e["success_count"]), text(e["failure_count"]), text(e["consecutive_failures"]),
                    e["rtt_ms"].is_null() ? "-" : text(e["rtt_ms"]) + " ms", why.empty() ? "-" : why});
  }
  print_table({"RANK", "ELIGIBLE", "ID", "PROTO", "ADDRESS", "RACE", "OK", "FAIL", "FAILING", "RTT", "WHY"}, rows);
}

void print_explanation(const json& x) {
  printf("node %s: %s (%s)\n", text(x["node_id"]).c_str(), paint(text(x["decision"]), "1").c_str(),
         decision_words(text(x["decision"])).c_str());
  printf("link     %s\n", link_words(x["link"]).c_str());
  const json& b = x["backoff"];
  if (b.is_null()) printf("backoff  none\n");
  else
    printf("backoff  attempt %s, delay %sms, next %s\n", text(b["attempt"]).c_str(), text(b["delay_ms"]).c_str(),
           human_time(b["next_attempt_at"]).c_str());
  std::string classes;
  for (const auto& [name, c] : x["classes"].items()) {
    classes += (classes.empty() ? "" : ", ") + name + " " + text(c["state"]);
    if (!c["last_success_at"].is_null()) classes += " (last success " + human_time(c["last_success_at"]) + ")";
  }
  printf("classes  %s\n\n", classes.c_str());
  print_candidates(x["candidates"]);
  printf("\nrecent attempts, oldest first:\n");
  if (x["recent"].empty()) {
    printf("none\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : x["recent"]) {
    const std::string outcome = text(r["outcome"]);
    rows.push_back({human_time(r["at"]), text(r["endpoint_id"]),
                    paint(outcome, outcome == "success" ? "32" : outcome == "failure" ? "31" : "33"),
                    text(r["reason"]), text(r["charged"])});
  }
  print_table({"AT", "ENDPOINT", "OUTCOME", "REASON", "CHARGED"}, rows);
}

int verb_explain(Options& o, const Arguments& a) {
  json p{{"node_id", a.positional[0]}};
  if (auto protocol = a.value("--protocol")) p["protocol"] = *protocol;
  return show(o, call(o, "nodes.explain", p), print_explanation);
}

int verb_add_node(Options& o, const Arguments& a) {
  json p{{"id", a.positional[0]}};
  if (auto name = a.value("--name")) p["name"] = *name;
  json endpoints = json::array();
  for (const auto& e : a.values("--endpoint")) endpoints.push_back(parse_endpoint(e));
  if (!endpoints.empty()) p["endpoints"] = endpoints;
  return show(o, call(o, "nodes.add", p), [](const json& n) {
    printf("added node %s\n", text(n["id"]).c_str());
    if (!n["endpoints"].empty()) print_endpoints(n["endpoints"]);
  });
}

int verb_remove_node(Options& o, const Arguments& a) {
  return show(o, call(o, "nodes.remove", {{"node_id", a.positional[0]}}),
              [](const json& r) { printf("removed node %s\n", text(r["node_id"]).c_str()); });
}

int verb_add_endpoint(Options& o, const Arguments& a) {
  const auto& pos = a.positional;
  json p{{"node_id", pos[0]}, {"protocol", pos[1]}, {"address", pos[2]}, {"port", number(pos[3], "PORT")}};
  if (auto s = a.value("--server-name")) p["server_name"] = *s;
  if (auto s = a.value("--alpn")) p["alpn"] = *s;
  if (auto s = a.value("--pin")) p["pin_sha256"] = *s;
  return show(o, call(o, "endpoints.add", p),
              [](const json& e) { printf("added endpoint %s\n", text(e["id"]).c_str()); });
}

int verb_remove_endpoint(Options& o, const Arguments& a) {
  return show(o, call(o, "endpoints.remove", {{"endpoint_id", number(a.positional[0], "ENDPOINT_ID")}}),
              [](const json& r) { printf("removed endpoint %s\n", text(r["endpoint_id"]).c_str()); });
}

// connect's params: a node (NODE) or one endpoint (--endpoint ID), not both.
// --wait lifts the default answer timeout: the daemon answers when the
// attempts are spent.
json connect_params(Options& o, const Arguments& a) {
  json p = json::object();
  if (auto e = a.value("--endpoint")) p["endpoint_id"] = number(*e, "--endpoint");
  if (auto protocol = a.value("--protocol")) p["protocol"] = *protocol;
  if (auto t = a.value("--timeout")) p["timeout_ms"] = duration_ms(*t, "--timeout");
  if (auto r = a.value("--retry")) p["retry"] = {{"max_attempts", number(*r, "--retry")}};
  if (a.has("--wait")) {
    p["wait"] = true;
    if (!o.timeout_s) o.timeout_s = 0;
  }
  if (a.has("--reconnect")) p["reconnect"] = true;
  if (p.contains("endpoint_id") == !a.positional.empty()) usage_error(a.usage);
  if (!a.positional.empty()) p["node_id"] = a.positional[0];
  return p;
}

// connect --wait for people: each attempt as it happens, on stderr ("attempt
// 2/5 via endpoint 3 (tcp) failed: refused", "next try in 2s").
json connect_showing_attempts(const Options& o, const json& p) {
  // Without --retry a connect makes one attempt.
  AttemptProgress progress(p, p.contains("retry") ? p["retry"]["max_attempts"].get<long long>() : 1);
  const json types{{"types", {"connecting", "connect_failed", "retry_scheduled"}}};
  return call(o, "connect", p, &types, [&](const json& e) { progress.show(e); });
}

int verb_connect(Options& o, const Arguments& a) {
  const json p = connect_params(o, a);
  const json result =
      p.value("wait", false) && !o.json_output ? connect_showing_attempts(o, p) : call(o, "connect", p);
  return show(o, result, [](const json& l) {
    printf("%s %s via %s %s:%s (%s attempt%s)\n", text(l["node_id"]).c_str(),
           l["reused"].get<bool>() ? "already linked" : "linked", text(l["protocol"]).c_str(),
           text(l["address"]).c_str(), text(l["port"]).c_str(), text(l["attempts"]).c_str(),
           l["attempts"] == 1 ? "" : "s");
  });
}

int verb_disconnect(Options& o, const Arguments& a) {
  return show(o, call(o, "disconnect", {{"node_id", a.positional[0]}}), [](const json& r) {
    printf("%s: %s\n", text(r["node_id"]).c_str(),
           r["was_connected"].get<bool>()        ? "disconnected"
           : r["cancelled_attempts"].get<bool>() ? "attempts cancelled"
                                                 : "was not linked");
  });
}

int verb_links(Options& o, const Arguments& a) {
  return show(o, call(o, "connections.list", {{"include_pending", a.has("--all")}}),
              [](const json& r) { print_links(r["connections"]); });
}

// `watch` as a stream: one line per event (one JSON object with --json) until
// the daemon stops.
int stream_events(const Options& o, const json& subscribe_params) {
  Connection c(o.socket, 0);
  c.send(json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "events.subscribe"}, {"params", subscribe_params}});
  for (;;) {
    auto msg = c.receive();
    if (!msg) return 0;  // the daemon stopped
    if (msg->contains("error")) {
      fprintf(stderr, "connmgrctl: %s\n", (*msg)["error"].value("message", "error").c_str());
      return kExitError;
    }
    if (msg->value("method", "") != "event") continue;
    if (o.json_output) {
      printf("%s\n", (*msg)["params"].dump().c_str());
      fflush(stdout);
    } else {
      print_event((*msg)["params"]);
    }
  }
}

int verb_watch(Options& o, const Arguments& a) {
  json p = json::object();
  if (!a.positional.empty()) p["types"] = a.positional;
  if (!a.has("--plain") && !o.json_output && isatty(STDOUT_FILENO)) return live_view(o, p);
  return stream_events(o, p);
}

// pipe's and exec's streams.open params. Without the global --timeout the
// answer is awaited as connect --wait's: the daemon answers when its
// attempts are spent.
json stream_params(const Arguments& a) {
  json p{{"node_id", a.positional[0]}};
  if (auto protocol = a.value("--protocol")) p["protocol"] = *protocol;
  if (auto t = a.value("--timeout")) p["timeout_ms"] = duration_ms(*t, "--timeout");
  return p;
}

int verb_pipe(Options& o, const Arguments& a) {
  return connmgr::ctl::join_stdio(connmgr::ctl::open_stream(o, stream_params(a)));
}

int verb_exec(Options& o, const Arguments& a) {
  return connmgr::ctl::exec_on(connmgr::ctl::open_stream(o, stream_params(a)), a.command);
}

int verb_call(Options& o, const Arguments& a) {
  json params = json::object();
  if (a.positional.size() == 2) {
    params = json::parse(a.positional[1], nullptr, false);
    if (params.is_discarded()) usage_error("JSON-PARAMS is not valid JSON");
  }
  printf("%s\n", call(o, a.positional[0], params).dump(o.json_output ? -1 : 2).c_str());
  return 0;
}

// --- the table ------------------------------------------------------------------------------

// The options of pipe and exec: streams.open's params.
std::vector<Flag> stream_flags() {
  return {{.name = "--protocol", .value = "P", .completes = Completion::kProtocol},
          {.name = "--timeout", .value = "DURATION"}};
}

// The commands, in the order --help lists them. Each row: the name, the
// positional arguments (synopsis, how many, what each completes to), the
// options, the handler and the help line; see verbs.h.
const Verbs kVerbs = {
    {.name = "status", .handler = verb_status, .help = "the daemon's identity, counts and configuration"},
    {.name = "metrics", .handler = verb_metrics,
     .help = "the daemon's metrics in the Prometheus text format (what metrics_listen serves)"},
    {.name = "nodes",
     .flags = {{.name = "--limit", .value = "N"}, {.name = "--after", .value = "ID", .completes = Completion::kNodeId}},
     .handler = verb_nodes, .help = "list nodes"},
    {.name = "node", .args = "ID", .min_args = 1, .max_args = 1, .arg_completions = {Completion::kNodeId},
     .handler = verb_node, .help = "one node with its endpoints"},
    {.name = "endpoints", .args = "NODE", .min_args = 1, .max_args = 1,
     .flags = {{.name = "--protocol", .value = "P", .completes = Completion::kProtocol}},
     .arg_completions = {Completion::kNodeId}, .handler = verb_endpoints, .help = "a node's endpoints, best first"},
    {.name = "explain", .args = "NODE", .min_args = 1, .max_args = 1,
     .flags = {{.name = "--protocol", .value = "P", .completes = Completion::kProtocol}},
     .arg_completions = {Completion::kNodeId}, .handler = verb_explain,
     .help = "what connect would do for a node and why: its candidates ranked, address classes, backoff, "
             "recent attempts"},
    {.name = "add-node", .args = "ID", .min_args = 1, .max_args = 1,
     .flags = {{.name = "--name", .value = "NAME"},
               {.name = "--endpoint", .value = "PROTO://HOST:PORT", .completes = Completion::kEndpointSpec,
                .repeats = true}},
     .handler = verb_add_node, .help = "add a node, with its endpoints"},
    {.name = "remove-node", .args = "ID", .min_args = 1, .max_args = 1, .arg_completions = {Completion::kNodeId},
     .handler = verb_remove_node, .help = "remove a node and its endpoints"},
    {.name = "add-endpoint", .args = "NODE PROTO HOST PORT", .min_args = 4, .max_args = 4,
     .flags = {{.name = "--server-name", .value = "S"}, {.name = "--alpn", .value = "A"},
               {.name = "--pin", .value = "SHA256"}},
     .arg_completions = {Completion::kNodeId, Completion::kProtocol}, .handler = verb_add_endpoint,
     .help = "add an endpoint to a node"},
    {.name = "remove-endpoint", .args = "ENDPOINT_ID", .min_args = 1, .max_args = 1,
     .handler = verb_remove_endpoint, .help = "remove an endpoint"},
    {.name = "connect", .args = "NODE | --endpoint ID", .min_args = 0, .max_args = 1,
     .flags = {{.name = "--endpoint", .value = "ID", .in_args = true},
               {.name = "--protocol", .value = "P", .completes = Completion::kProtocol},
               {.name = "--timeout", .value = "DURATION"}, {.name = "--retry", .value = "N"}, {.name = "--wait"},
               {.name = "--reconnect"}},
     .arg_completions = {Completion::kNodeId}, .handler = verb_connect,
     .help = "link a node (DURATION: 5s, 500ms, 1m)"},
    {.name = "disconnect", .args = "NODE", .min_args = 1, .max_args = 1, .arg_completions = {Completion::kNodeId},
     .handler = verb_disconnect, .help = "close a node's link, cancel its attempts"},
    {.name = "links", .flags = {{.name = "--all"}}, .handler = verb_links,
     .help = "established links (--all: also pending)"},
    {.name = "watch", .args = "[TYPE ...]", .max_args = kUnlimited, .flags = {{.name = "--plain"}},
     .arg_completions = {Completion::kEventType}, .handler = verb_watch,
     .help = "events as they happen; on a terminal a live view of the links over the latest events (Ctrl-C ends)"},
    {.name = "pipe", .args = "NODE", .min_args = 1, .max_args = 1, .flags = stream_flags(),
     .arg_completions = {Completion::kNodeId}, .handler = verb_pipe,
     .help = "a stream to the node joined to stdin and stdout (an ssh ProxyCommand)"},
    {.name = "exec", .args = "NODE", .min_args = 1, .max_args = 1, .flags = stream_flags(),
     .arg_completions = {Completion::kNodeId}, .handler = verb_exec,
     .help = "run CMD with a stream to the node as its stdin and stdout", .command = "CMD [ARGS]"},
    {.name = "call", .args = "METHOD [JSON-PARAMS]", .min_args = 1, .max_args = 2,
     .arg_completions = {Completion::kMethod}, .handler = verb_call, .help = "any method, raw", .raw = true},
    {.name = "help", .max_args = kUnlimited, .handler = verb_help, .help = "this text", .raw = true},
};

// The options before the command; --json also after it (but among call's raw
// arguments). --help and --version have no line in --help's Options.
const std::vector<Flag> kGlobalOptions = {
    {.name = "--socket", .value = "PATH", .completes = Completion::kFile, .help = "the daemon's socket (see below)"},
    {.name = "--json", .help = "print the result as JSON (one line), for scripts", .after_command = true},
    {.name = "--timeout", .value = "DURATION",
     .help = "how long to wait for an answer [60s; connect --wait, pipe, exec: no limit]"},
    {.name = "--help"},
    {.name = "--version"},
};

constexpr const char* kHelpNotes =
    "Exit status: 0 success, 1 error answer (message on stderr; pipe: also a stream reset\n"
    "or closed by connmgrd), 2 usage error, 3 the daemon cannot be reached or did not\n"
    "answer. exec, once the stream is open: CMD's own status, 126 CMD cannot be run,\n"
    "127 CMD not found.\n"
    "\n"
    "The socket: --socket, else $CONNMGR_SOCKET, else /run/connmgr/connmgrd.sock for root\n"
    "and $XDG_RUNTIME_DIR/connmgr/connmgrd.sock for other users (/tmp/connmgr-UID/connmgrd.sock\n"
    "without XDG_RUNTIME_DIR), as connmgrd's own default; a user without a daemon of their\n"
    "own gets /run/connmgr/connmgrd.sock when it exists. Colour only on a terminal, never\n"
    "with NO_COLOR set.\n";

std::string help_text() {
  return "Usage: connmgrctl [--socket PATH] [--json] [--timeout DURATION] COMMAND [ARGS]\n\nCommands:\n" +
         connmgr::ctl::commands_help(kVerbs) + "\nOptions:\n" + connmgr::ctl::options_help(kGlobalOptions) + "\n" +
         kHelpNotes;
}

// --- completion ------------------------------------------------------------------------------

// What `watch` and `call` complete to: the event types and the methods of
// proto/connmgr.openrpc.json (tests/install/docs_drift_test.py compares them).
const std::vector<std::string> kEventTypes = {"connecting",   "connected",  "connect_failed", "retry_scheduled",
                                              "disconnected", "node_added", "node_removed",   "stream_opened",
                                              "stream_closed", "network_changed", "gave_up",
                                              "inventory_changed"};
const std::vector<std::string> kMethods = {
    "nodes.list",       "nodes.get",    "nodes.explain",  "endpoints.list", "connect",          "disconnect",
    "connections.list", "nodes.add",    "nodes.remove",   "endpoints.add",    "endpoints.remove",
    "events.subscribe", "events.unsubscribe", "status",         "streams.open",     "streams.list",
    "metrics"};
const std::vector<std::string> kProtocols = {"tcp", "quic"};

// The daemon's node ids, asked on the socket the command line names, within
// 2 s; exits 1 or 3 (message on stderr) when it cannot answer.
std::vector<std::string> node_ids(const Arguments& globals) {
  Options o;
  o.socket = globals.value("--socket").value_or(default_socket());
  o.timeout_s = 2;
  const json result = call(o, "nodes.list", {{"limit", 10000}});
  std::vector<std::string> ids;
  for (const auto& n : result["nodes"]) ids.push_back(text(n["id"]));
  return ids;
}

// `connmgrctl __complete WORD...`, for connmgrctl.bash: WORDs are the command
// line after the program name up to the word being completed (the last one).
// Prints how bash completes it ("words", "nospace": words after which no
// space goes, "files" or "commands") and then the words, one a line, before filtering by
// what is typed already.
int complete_command_line(const std::vector<std::string>& words) {
  auto request = connmgr::ctl::complete(kVerbs, kGlobalOptions, words);
  std::vector<std::string>& out = request.words;
  const char* how = "words";
  switch (request.kind) {
    case Completion::kNone:
    case Completion::kWords: break;
    case Completion::kFile: how = "files"; break;
    case Completion::kCommand: how = "commands"; break;
    case Completion::kNodeId: out = node_ids(request.globals); break;
    case Completion::kProtocol: out = kProtocols; break;
    case Completion::kEndpointSpec:
      how = "nospace";
      for (const auto& p : kProtocols) out.push_back(p + "://");
      break;
    case Completion::kEventType: out = kEventTypes; break;
    case Completion::kMethod: out = kMethods; break;
  }
  printf("%s\n", how);
  for (const auto& w : out) printf("%s\n", w.c_str());
  return 0;
}

// --- main -------------------------------------------------------------------------------------

void set_global_option(Options& o, const std::string& name, const std::string& value) {
  if (name == "--socket") o.socket = value;
  else o.timeout_s = static_cast<double>(duration_ms(value, "--timeout")) / 1000;
}

// The global options before the command; returns where the command starts.
// --help and --version print and exit.
size_t parse_global_options(const std::vector<std::string>& args, Options& o) {
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      fputs(help_text().c_str(), stdout);
      exit(0);
    }
    if (a == "--version") {
      printf("connmgrctl %s\n", CONNMGR_VERSION);
      exit(0);
    }
    if (a == "--json") {
      o.json_output = true;
    } else if (a == "--socket" || a == "--timeout") {
      if (i + 1 >= args.size()) usage_error(a + " needs a value");
      set_global_option(o, a, args[++i]);
    } else if (a.rfind("--socket=", 0) == 0 || a.rfind("--timeout=", 0) == 0) {
      set_global_option(o, a.substr(0, a.find('=')), a.substr(a.find('=') + 1));
    } else if (a.rfind("--", 0) == 0) {
      usage_error("unknown option " + a);
    } else {
      break;
    }
  }
  return i;
}

// --json after the command (`connmgrctl nodes --json`): its first occurrence
// before a "--" (after it, exec's command has its own words).
bool take_json_flag(std::vector<std::string>& words) {
  for (auto it = words.begin(); it != words.end() && *it != "--"; ++it)
    if (*it == "--json") {
      words.erase(it);
      return true;
    }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "__complete") return complete_command_line({args.begin() + 1, args.end()});
  Options o;
  o.socket = default_socket();
  std::vector<std::string> words(args.begin() + static_cast<long>(parse_global_options(args, o)), args.end());
  if (words.empty()) usage_error("no command");
  const Verb* verb = connmgr::ctl::find_verb(kVerbs, words[0]);
  if (!verb) usage_error("unknown command '" + words[0] + "'");
  words.erase(words.begin());
  if (!verb->raw && take_json_flag(words)) o.json_output = true;
  return verb->handler(o, connmgr::ctl::parse_arguments(*verb, words));
}
