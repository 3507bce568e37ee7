#include "metrics/families.h"

#include <chrono>
#include <deque>
#include <string_view>

#include "core/connection_manager.h"
#include "rpc/dispatcher.h"
#include "storage/store.h"

namespace connmgr::metrics {

namespace {

using namespace std::string_view_literals;

// A nodes/endpoints count another process's commits may change: looked for
// at most once a second (counting is cached by the Store until then).
constexpr std::chrono::milliseconds kCountsMaxAge{1000};

// The protocols to write rows for: every connector's (zeros until it is
// used), then any other the manager met ("none": supervised links that never
// had an endpoint). `zeros` holds the rows of protocols not used yet.
std::vector<const ProtocolMetrics*> protocol_rows(const Sources& s, const ManagerMetrics& m,
                                                  std::deque<ProtocolMetrics>& zeros) {
  std::vector<const ProtocolMetrics*> rows;
  auto listed = [&](std::string_view name) {
    for (const auto* r : rows)
      if (r->protocol == name) return true;
    return false;
  };
  for (const std::string& name : s.protocols) {
    const ProtocolMetrics* found = nullptr;
    for (const auto& p : m.protocols)
      if (p.protocol == name) found = &p;
    if (!found) found = &zeros.emplace_back(name);
    rows.push_back(found);
  }
  for (const auto& p : m.protocols)
    if (!listed(p.protocol)) rows.push_back(&p);
  return rows;
}

void write_inventory_counts(const Sources& s, Exposition& e) {
  StoreCounts counts;
  if (s.store)
    if (auto c = s.store->counts(kCountsMaxAge); c.ok()) counts = *c;
  e.family("connmgr_nodes", Type::kGauge, "Nodes in the database.");
  e.sample({}, counts.nodes);
  e.family("connmgr_endpoints", Type::kGauge, "Endpoints in the database.");
  e.sample({}, counts.endpoints);
}

void write_links(const std::vector<const ProtocolMetrics*>& rows, Exposition& e) {
  e.family("connmgr_links", Type::kGauge,
           "Links by the protocol of the endpoint they dial or hold, and state (connecting, "
           "waiting_retry, active).");
  for (const auto* p : rows)
    for (size_t st = 0; st < kLinkStates; ++st)
      e.sample({{"protocol", p->protocol}, {"state", link_state_name(static_cast<LinkState>(st))}},
               p->links[st]);
}

void write_dials(const std::vector<const ProtocolMetrics*>& rows, Exposition& e) {
  e.family("connmgr_dials", Type::kCounter,
           "Dials ended, by protocol and result (success, failure, or cancelled: a race's loser).");
  for (const auto* p : rows) {
    if (p->protocol == "none") continue;
    for (size_t r = 0; r < kDialResultNames.size(); ++r)
      e.sample({{"protocol", p->protocol}, {"result", kDialResultNames[r]}}, p->dials[r]);
  }
  e.family("connmgr_dial_failures", Type::kCounter, "Failed dials by protocol and reason.");
  for (const auto* p : rows)
    for (const auto& [reason, n] : p->failures)
      e.sample({{"protocol", p->protocol}, {"reason", reason}}, n);
  e.family("connmgr_dial_duration_seconds", Type::kHistogram,
           "How long successful link dials took, from the dial's start to the link up "
           "(handshake included).",
           "seconds");
  for (const auto* p : rows)
    if (p->protocol != "none") e.histogram({{"protocol", p->protocol}}, p->dial_duration);
}

void write_link_ends(const ManagerMetrics& m, Exposition& e) {
  e.family("connmgr_link_duration_seconds", Type::kHistogram,
           "How long links that ended had been up.", "seconds");
  e.histogram({}, m.link_duration);
  e.family("connmgr_disconnects", Type::kCounter, "Active links that ended, by reason.");
  for (const auto& [reason, n] : m.disconnects) e.sample({{"reason", reason}}, n);
}

void write_streams(const std::vector<const ProtocolMetrics*>& rows, Exposition& e) {
  e.family("connmgr_streams", Type::kGauge, "Streams open, by protocol.");
  for (const auto* p : rows)
    if (p->protocol != "none") e.sample({{"protocol", p->protocol}}, p->streams);
  e.family("connmgr_stream_bytes", Type::kCounter,
           "Bytes carried by streams, by protocol and direction (in: from the node; out: to it).");
  for (const auto* p : rows) {
    if (p->protocol == "none") continue;
    e.sample({{"protocol", p->protocol}, {"direction", "in"}}, p->stream_bytes_in);
    e.sample({{"protocol", p->protocol}, {"direction", "out"}}, p->stream_bytes_out);
  }
}

void write_rpc(const Sources& s, Exposition& e) {
  e.family("connmgr_rpc_requests", Type::kCounter,
           "JSON-RPC calls answered, by method (unknown: no such method; invalid: not a "
           "readable request) and outcome (success, error).");
  if (s.dispatcher) {
    for (const auto& [method, c] : s.dispatcher->request_counts()) {
      e.sample({{"method", method}, {"outcome", "success"}}, c.success);
      e.sample({{"method", method}, {"outcome", "error"}}, c.error);
    }
  }
  e.family("connmgr_rpc_clients", Type::kGauge, "Clients connected to the JSON-RPC socket.");
  e.sample({}, static_cast<uint64_t>(s.rpc_clients ? s.rpc_clients() : 0));
}

void write_dialing(const ConnectionManager& manager, Exposition& e) {
  const ManagerMetrics& m = manager.metrics();
  e.family("connmgr_uncharged_failures", Type::kCounter,
           "Failed dials not charged to their endpoint's failure_count, by why (local_network: "
           "this host's network failed; outage: the endpoint's address class has had no success "
           "since its last charged failure).");
  for (size_t w = 0; w < kUnchargedWhyNames.size(); ++w)
    e.sample({{"why", kUnchargedWhyNames[w]}}, m.uncharged[w]);
  e.family("connmgr_races", Type::kCounter,
           "Attempts that raced several endpoints, by outcome (first: the best-ranked won; "
           "fallback: another did; failed: all failed).");
  for (size_t o = 0; o < kRaceOutcomeNames.size(); ++o)
    e.sample({{"outcome", kRaceOutcomeNames[o]}}, m.races[o]);
  e.family("connmgr_network_changes", Type::kCounter,
           "Changes of the host's network seen (links, addresses, routes).");
  e.sample({}, m.network_changes);
  e.family("connmgr_network_class_state", Type::kGauge,
           "The state of each address class as dials see it: 1 for its current state (up, down, "
           "unknown), 0 for the others.");
  const NetworkStatus net = manager.network_status();
  for (size_t c = 0; c < kAddressClasses; ++c) {
    const std::string_view cls = address_class_name(static_cast<AddressClass>(c));
    for (std::string_view st : {"up"sv, "down"sv, "unknown"sv})
      e.sample({{"class", cls}, {"state", st}}, uint64_t{net.classes[c].state == st ? 1u : 0u});
  }
  e.family("connmgr_dials_in_flight", Type::kGauge,
           "Dials under way, each holding one of max_concurrent_dials slots.");
  e.sample({}, static_cast<uint64_t>(manager.dials_under_way()));
  e.family("connmgr_dials_queued", Type::kGauge, "Dials waiting for a free slot.");
  e.sample({}, static_cast<uint64_t>(manager.dials_waiting()));
}

void write_storage(const Sources& s, Exposition& e) {
  e.family("connmgr_storage_flush_duration_seconds", Type::kHistogram,
           "How long each write of queued endpoint statistics took (one transaction).", "seconds");
  if (s.store) e.histogram({}, s.store->flush_durations());
  e.family("connmgr_storage_pending_stats", Type::kGauge,
           "Endpoints whose statistics are queued, not yet written.");
  e.sample({}, static_cast<uint64_t>(s.store ? s.store->pending_stats() : 0));
}

}  // namespace

void write_inventory_metrics(Exposition& e, const InventoryStatus& status) {
  e.family("connmgr_inventory_state", Type::kGauge,
           "The inventory backend (local, postgres) and its state: 1 for the current one (connected, "
           "connecting, unavailable), 0 for the others.");
  for (InventoryState st : {InventoryState::kConnected, InventoryState::kConnecting, InventoryState::kUnavailable})
    e.sample({{"backend", status.backend}, {"state", inventory_state_name(st)}},
             uint64_t{status.state == st ? 1u : 0u});
  e.family("connmgr_inventory_revision", Type::kGauge,
           "The shared inventory's last revision applied to this host's mirror (0: none; local: 0).");
  e.sample({}, status.revision);
  e.family("connmgr_inventory_lag_seconds", Type::kGauge,
           "Seconds since the mirror was last known to be current (postgres only).", "seconds");
  if (status.lag_s) e.sample({}, *status.lag_s);
}

std::string render(const Sources& s, Format format, Scope scope) {
  Exposition e(format);
  e.family("connmgr_build", Type::kInfo, "The running connmgrd's version.");
  e.info({{"version", s.version}});
  write_inventory_counts(s, e);
  static const ManagerMetrics kNone;
  const ManagerMetrics& m = s.manager ? s.manager->metrics() : kNone;
  std::deque<ProtocolMetrics> zeros;
  const auto rows = protocol_rows(s, m, zeros);
  write_links(rows, e);
  write_dials(rows, e);
  write_link_ends(m, e);
  write_streams(rows, e);
  write_rpc(s, e);
  if (s.manager) write_dialing(*s.manager, e);
  write_storage(s, e);
  if (s.extra) s.extra(e);
  if (scope == Scope::kAll && s.process) s.process(e);
  return e.finish();
}

}  // namespace connmgr::metrics
