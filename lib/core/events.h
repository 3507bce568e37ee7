// The events the manager publishes (docs/api.md, "Events") and the bus that
// delivers them.
//
// The bus is synchronous and single-threaded: publish() calls every
// subscriber in subscription order before it returns, so each subscriber
// sees events in the order they happened. A subscriber may subscribe or
// unsubscribe (itself or others) from inside a callback; an unsubscribed
// subscriber gets no further events, not even the one being published.
// A subscriber may name the types it wants; wants() tells a publisher
// whether anyone would receive an event of a type, so that an event nobody
// wants need not be built at all.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace connmgr {

enum class EventType {
  kConnecting,      // attempt; race_offset_ms when racing
  kConnected,
  kConnectFailed,   // reason (a race's cancelled loser: "cancelled"), attempt
  kRetryScheduled,  // attempt, delay_ms, next_attempt_at
  kDisconnected,    // reason: requested, closed, reset, idle_timeout, shutdown, or a
                    // kernel error's reason (timeout, unreachable, local_network, EPIPE)
  kNodeAdded,
  kNodeRemoved,
  kStreamOpened,  // stream_id
  kStreamClosed,  // stream_id, reason, bytes_in, bytes_out
  kNetworkChanged,  // generation; no node_id (empty)
  kGaveUp,  // a link's attempts are spent: endpoint_id, protocol and reason of the
            // failure reported, attempt (the attempts made)
  kInventoryChanged,  // revision, kind; node_id and endpoint_id when the change has them
};

// The protocol's spelling ("connect_failed"), and back; nullopt for an unknown name.
std::string_view event_type_name(EventType type);
std::optional<EventType> event_type_from_name(std::string_view name);
const std::vector<EventType>& all_event_types();

// A set of event types as a bit mask (bit n: EventType n).
using EventTypeMask = uint32_t;
inline constexpr EventTypeMask kAllEventTypes = ~EventTypeMask{0};
constexpr EventTypeMask event_type_bit(EventType type) {
  return EventTypeMask{1} << static_cast<unsigned>(type);
}

struct Event {
  EventType type = EventType::kConnecting;
  int64_t at = 0;  // unix ms
  std::string node_id;
  std::optional<int64_t> endpoint_id;
  std::optional<std::string> protocol;
  std::optional<std::string> reason;
  std::optional<int> attempt;
  std::optional<int64_t> delay_ms;
  std::optional<int64_t> next_attempt_at;  // unix ms
  // Streams: the stream's id, and at its end the bytes it carried (in: from
  // the node; out: to the node).
  std::optional<uint64_t> stream_id;
  std::optional<uint64_t> bytes_in;
  std::optional<uint64_t> bytes_out;
  // connecting: how long after the race's first dial this one began.
  std::optional<int64_t> race_offset_ms;
  // network_changed: the network generation (status.network.generation).
  std::optional<uint64_t> generation;
  // inventory_changed: the shared inventory's revision applied to this
  // host's mirror, and what it changed (node_added, node_removed,
  // endpoint_added, endpoint_removed, resync).
  std::optional<int64_t> revision;
  std::optional<std::string> kind;
};

class EventBus {
 public:
  using Subscriber = std::function<void(const Event&)>;
  using SubscriptionId = uint64_t;

  // The subscriber gets the events whose type is in `types`.
  SubscriptionId subscribe(Subscriber subscriber, EventTypeMask types = kAllEventTypes);
  void unsubscribe(SubscriptionId id);
  void publish(const Event& event);
  size_t subscriber_count() const;
  // Whether a subscriber would receive an event of `type` now. Cheap: a
  // publisher may ask before building the event.
  bool wants(EventType type) const { return (wanted_ & event_type_bit(type)) != 0; }

 private:
  struct Entry {
    SubscriptionId id;
    Subscriber fn;
    EventTypeMask types;
    bool live;
  };
  void erase_dead();
  // Entries stay where they are while the vector grows (a callback may
  // subscribe), so a callback runs in place, without a copy of it.
  std::vector<std::unique_ptr<Entry>> entries_;
  EventTypeMask wanted_ = 0;  // the union of the live entries' types
  SubscriptionId next_id_ = 1;
  int publishing_ = 0;
};

}  // namespace connmgr
