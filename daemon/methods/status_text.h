// StatusText: the `status` result (docs/api.md, "status") written as JSON text.
//
// Most of that answer does not change from call to call: the daemon's
// identity (version, database, socket, node id), the connector names (fixed
// at start) and the configuration (changed only by a reload). Those parts are
// serialized when they change and kept as text; a call writes only the
// counts, the network state (given as text) and the uptime between them.
// Building the whole answer as a nlohmann object and dumping it was most of
// the daemon's cost per `status`.
//
// The members come in the order a nlohmann object (a std::map) keeps them,
// alphabetical, so the text is byte for byte what json{...}.dump() wrote
// (status_text_test.cc holds it to that). Strings are escaped by nlohmann's
// serializer (rpc::append_json), invalid UTF-8 included.
//
// A plain value type; no threads of its own.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/json_text.h"

namespace connmgr::methods {

class StatusText {
 public:
  StatusText() { build_head(); }

  // What changes between calls.
  struct Live {
    uint64_t uptime_s = 0;
    int64_t nodes = 0;
    int64_t endpoints = 0;
    uint64_t active = 0;
    uint64_t pending = 0;
    uint64_t clients = 0;
    uint64_t streams = 0;
    // status.network as JSON text (json_codec's append_network_json); empty: null.
    std::string_view network;
    // status.inventory as JSON text; empty: no such member.
    std::string_view inventory;
  };

  // The parts kept as text; each setter re-serializes its part.
  void set_config(const rpc::json& config) {
    config_.clear();
    rpc::append_json(config_, config);
    build_head();
  }
  void set_connectors(const std::vector<std::string>& names) {
    connectors_.clear();
    rpc::append_json(connectors_, rpc::json(names));
    connectors_set_ = true;
    build_head();
  }
  void set_identity(std::string_view version, std::string_view database,
                    std::string_view socket, std::string_view node_id) {
    version_ = version;
    database_ = database;
    socket_ = socket;
    node_id_ = node_id;
    middle_ = R"(},"database":)";
    rpc::append_json(middle_, rpc::json(database_));
    after_network_ = R"(,"node_id":)";
    rpc::append_json(after_network_, rpc::json(node_id_));
    after_network_ += R"(,"socket":)";
    rpc::append_json(after_network_, rpc::json(socket_));
    after_network_ += R"(,"uptime_s":)";
    tail_ = R"(,"version":)";
    rpc::append_json(tail_, rpc::json(version_));
    tail_ += '}';
  }
  // Whether set_identity() was given these values (the node id may be set
  // after start; comparing is far cheaper than re-serializing).
  bool identity_is(std::string_view version, std::string_view database, std::string_view socket,
                   std::string_view node_id) const {
    return has_identity() && node_id == node_id_ && database == database_ && socket == socket_ &&
           version == version_;
  }
  bool has_connectors() const { return connectors_set_; }
  bool has_identity() const { return !middle_.empty(); }

  // The whole result object, in place of what `out` held (its capacity is
  // kept, so a caller that keeps `out` allocates nothing here).
  void write(const Live& live, std::string& out) const {
    out.clear();
    out.reserve(head_.size() + middle_.size() + after_network_.size() + live.network.size() +
                live.inventory.size() + tail_.size() + 128);
    out += head_;
    append_number(out, live.active);
    out += R"(,"clients":)";
    append_number(out, live.clients);
    out += R"(,"endpoints":)";
    append_number(out, live.endpoints);
    out += R"(,"nodes":)";
    append_number(out, live.nodes);
    out += R"(,"pending":)";
    append_number(out, live.pending);
    out += R"(,"streams":)";
    append_number(out, live.streams);
    out += middle_;
    if (!live.inventory.empty()) {
      out += R"(,"inventory":)";
      out += live.inventory;
    }
    out += R"(,"network":)";
    out += live.network.empty() ? std::string_view("null") : live.network;
    out += after_network_;
    append_number(out, live.uptime_s);
    out += tail_;
  }

 private:
  void build_head() {
    head_ = R"({"config":)";
    head_ += config_.empty() ? std::string_view("{}") : std::string_view(config_);
    head_ += R"(,"connectors":)";
    head_ += connectors_.empty() ? std::string_view("[]") : std::string_view(connectors_);
    head_ += R"(,"counts":{"active":)";
  }

  template <class Int>
  static void append_number(std::string& out, Int v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }

  std::string config_;      // the configuration object
  std::string connectors_;  // the connector names array
  bool connectors_set_ = false;
  std::string version_, database_, socket_, node_id_;
  std::string head_;    // {"config":...,"connectors":[...],"counts":{"active":
  std::string middle_;  // },"database":...
  std::string after_network_;  // ,"node_id":...,"socket":...,"uptime_s":
  std::string tail_;    // ,"version":...}
};

}  // namespace connmgr::methods
