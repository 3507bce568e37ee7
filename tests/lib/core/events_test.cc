#include "core/events.h"

#include <catch2/catch.hpp>

using namespace connmgr;

TEST_CASE("event type names are the protocol's and round-trip") {
  CHECK(event_type_name(EventType::kConnectFailed) == "connect_failed");
  CHECK(event_type_name(EventType::kRetryScheduled) == "retry_scheduled");
  for (auto t : all_event_types()) CHECK(event_type_from_name(event_type_name(t)) == t);
  CHECK_FALSE(event_type_from_name("exploded").has_value());
  CHECK(all_event_types().size() == 12);
  CHECK(event_type_name(EventType::kGaveUp) == "gave_up");
  CHECK(event_type_name(EventType::kNetworkChanged) == "network_changed");
  CHECK(event_type_name(EventType::kInventoryChanged) == "inventory_changed");
  CHECK(event_type_name(EventType::kStreamOpened) == "stream_opened");
  CHECK(event_type_name(EventType::kStreamClosed) == "stream_closed");
}

TEST_CASE("subscribers receive events in order, in subscription order") {
  EventBus bus;
  std::vector<std::string> seen;
  bus.subscribe([&](const Event& e) { seen.push_back("a:" + e.node_id); });
  bus.subscribe([&](const Event& e) { seen.push_back("b:" + e.node_id); });
  Event e;
  e.node_id = "n1";
  bus.publish(e);
  e.node_id = "n2";
  bus.publish(e);
  CHECK(seen == std::vector<std::string>{"a:n1", "b:n1", "a:n2", "b:n2"});
}

TEST_CASE("an unsubscribed subscriber gets nothing more") {
  EventBus bus;
  int a = 0, b = 0;
  auto ida = bus.subscribe([&](const Event&) { a++; });
  bus.subscribe([&](const Event&) { b++; });
  bus.publish(Event{});
  bus.unsubscribe(ida);
  bus.publish(Event{});
  CHECK(a == 1);
  CHECK(b == 2);
  CHECK(bus.subscriber_count() == 1);
}

TEST_CASE("a subscriber may unsubscribe itself and others while an event is delivered") {
  EventBus bus;
  int a = 0, b = 0;
  EventBus::SubscriptionId ida = 0, idb = 0;
  ida = bus.subscribe([&](const Event&) {
    a++;
    bus.unsubscribe(ida);
    bus.unsubscribe(idb);
  });
  idb = bus.subscribe([&](const Event&) { b++; });
  bus.publish(Event{});
  bus.publish(Event{});
  CHECK(a == 1);
  CHECK(b == 0);
  CHECK(bus.subscriber_count() == 0);
}

TEST_CASE("a subscriber added during delivery sees only later events") {
  EventBus bus;
  int late = 0;
  bool added = false;
  bus.subscribe([&](const Event&) {
    if (!added) {
      added = true;
      bus.subscribe([&](const Event&) { late++; });
    }
  });
  bus.publish(Event{});
  CHECK(late == 0);
  bus.publish(Event{});
  CHECK(late == 1);
}

TEST_CASE("a subscriber gets only the types it named, and wants() follows the subscriptions") {
  EventBus bus;
  CHECK_FALSE(bus.wants(EventType::kConnected));
  std::vector<EventType> failures, everything;
  auto id = bus.subscribe([&](const Event& e) { failures.push_back(e.type); },
                          event_type_bit(EventType::kConnectFailed) |
                              event_type_bit(EventType::kDisconnected));
  CHECK(bus.wants(EventType::kConnectFailed));
  CHECK_FALSE(bus.wants(EventType::kConnected));
  for (auto t : {EventType::kConnecting, EventType::kConnectFailed, EventType::kConnected,
                 EventType::kDisconnected}) {
    Event e;
    e.type = t;
    bus.publish(e);
  }
  CHECK(failures == std::vector<EventType>{EventType::kConnectFailed, EventType::kDisconnected});
  bus.subscribe([&](const Event& e) { everything.push_back(e.type); });
  CHECK(bus.wants(EventType::kConnected));
  bus.unsubscribe(id);
  CHECK(bus.wants(EventType::kConnectFailed));  // the second still wants every type
  Event e;
  e.type = EventType::kConnectFailed;
  bus.publish(e);
  CHECK(failures.size() == 2);
  CHECK(everything == std::vector<EventType>{EventType::kConnectFailed});
}

TEST_CASE("a subscriber that unsubscribes itself from its callback runs to its end safely") {
  EventBus bus;
  EventBus::SubscriptionId id = 0;
  std::string trail;
  id = bus.subscribe([&](const Event& e) {
    bus.unsubscribe(id);
    trail += e.node_id;  // the callback's own captures are still valid here
  });
  Event e;
  e.node_id = "x";
  bus.publish(e);
  bus.publish(e);
  CHECK(trail == "x");
  CHECK(bus.subscriber_count() == 0);
  CHECK_FALSE(bus.wants(EventType::kConnecting));
}
