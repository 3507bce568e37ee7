#include "core/events.h"

#include <algorithm>

namespace connmgr {

namespace {

struct TypeName {
  EventType type;
  std::string_view name;
};

// The one place these names are spelled (docs/api.md, "EventType").
constexpr TypeName kTypeNames[] = {
    {EventType::kConnecting, "connecting"},
    {EventType::kConnected, "connected"},
    {EventType::kConnectFailed, "connect_failed"},
    {EventType::kRetryScheduled, "retry_scheduled"},
    {EventType::kDisconnected, "disconnected"},
    {EventType::kNodeAdded, "node_added"},
    {EventType::kNodeRemoved, "node_removed"},
    {EventType::kStreamOpened, "stream_opened"},
    {EventType::kStreamClosed, "stream_closed"},
    {EventType::kNetworkChanged, "network_changed"},
    {EventType::kGaveUp, "gave_up"},
    {EventType::kInventoryChanged, "inventory_changed"},
};

}  // namespace

std::string_view event_type_name(EventType type) {
  for (const auto& t : kTypeNames)
    if (t.type == type) return t.name;
  return "unknown";
}

std::optional<EventType> event_type_from_name(std::string_view name) {
  for (const auto& t : kTypeNames)
    if (t.name == name) return t.type;
  return std::nullopt;
}

const std::vector<EventType>& all_event_types() {
  static const std::vector<EventType> all = [] {
    std::vector<EventType> v;
    for (const auto& t : kTypeNames) v.push_back(t.type);
    return v;
  }();
  return all;
}

EventBus::SubscriptionId EventBus::subscribe(Subscriber subscriber, EventTypeMask types) {
  const SubscriptionId id = next_id_++;
  entries_.push_back(std::make_unique<Entry>(Entry{id, std::move(subscriber), types, true}));
  wanted_ |= types;
  return id;
}

void EventBus::unsubscribe(SubscriptionId id) {
  wanted_ = 0;
  for (auto& e : entries_) {
    if (e->id == id) e->live = false;
    if (e->live) wanted_ |= e->types;
  }
  // Entries are erased only outside publish(), so that a subscriber may
  // unsubscribe from inside its own callback without invalidating the loop.
  if (publishing_ == 0) erase_dead();
}

void EventBus::erase_dead() {
  std::erase_if(entries_, [](const std::unique_ptr<Entry>& e) { return !e->live; });
}

void EventBus::publish(const Event& event) {
  const EventTypeMask bit = event_type_bit(event.type);
  if (!(wanted_ & bit)) return;
  ++publishing_;
  // Index loop: subscribe() from a callback may grow the vector; subscribers
  // added during this publish do not see this event. An Entry is not freed
  // while publishing_ is non-zero, so the callback may unsubscribe itself.
  const size_t n = entries_.size();
  for (size_t i = 0; i < n; ++i) {
    Entry& e = *entries_[i];
    if (!e.live || !(e.types & bit)) continue;
    e.fn(event);
  }
  if (--publishing_ == 0) erase_dead();
}

size_t EventBus::subscriber_count() const {
  return static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(),
                                           [](const std::unique_ptr<Entry>& e) { return e->live; }));
}

}  // namespace connmgr
