// STUB until the postgres backend lands: every write is refused as
// "unavailable" and the state is "unavailable".
#include "storage/postgres_inventory.h"

namespace connmgr {

namespace {

class StubInventory : public Inventory {
 public:
  explicit StubInventory(std::string dsn) : dsn_(std::move(dsn)) {}
  void add_node(const NodeSpec&, NodeDone done) override { done(unavailable()); }
  void remove_node(const std::string&, Done done) override { done(unavailable()); }
  void add_endpoint(const std::string&, const EndpointSpec&, EndpointDone done) override {
    done(unavailable());
  }
  void remove_endpoint(int64_t, Done done) override { done(unavailable()); }
  InventoryStatus status() const override {
    InventoryStatus s;
    s.backend = "postgres";
    s.state = InventoryState::kUnavailable;
    s.dsn = dsn_;
    return s;
  }

 private:
  static Error unavailable() { return Error::storage("postgres backend not built yet", "unavailable"); }
  std::string dsn_;
};

}  // namespace

Result<bool> dsn_has_password(const std::string&) { return false; }
std::string dsn_for_display(const std::string& dsn) { return dsn; }

std::unique_ptr<Inventory> make_postgres_inventory(uv_loop_t*, Store&,
                                                   PostgresInventoryOptions options) {
  return std::make_unique<StubInventory>(std::move(options.dsn));
}

}  // namespace connmgr
