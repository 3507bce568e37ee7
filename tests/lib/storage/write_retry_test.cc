// retry_when_locked against a real foreign write lock (a second connection
// holding BEGIN EXCLUSIVE).
#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

// --- write retries ------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a write that meets a lock is retried until the lock is gone") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  std::optional<Status> result;
  retry_when_locked(
      &loop, 5s,
      [&] {
        ++tries;
        NodeSpec spec;
        spec.id = "late";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) { result = s; });
  CHECK(tries == 0);  // never inside the call
  connmgr::test::run_for(&loop, 150ms);
  CHECK_FALSE(result.has_value());
  CHECK(tries > 1);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 3s));
  CHECK(result->ok());
  CHECK(store->get_node("late").ok());
}

TEST_CASE_METHOD(Fixture, "a write gives up after its limit with reason locked") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  std::optional<Status> result;
  retry_when_locked(
      &loop, 200ms,
      [&] {
        NodeSpec spec;
        spec.id = "never";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) { result = s; });
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 3s));
  CHECK(result->code() == ErrorCode::kStorage);
  CHECK(result->reason() == "locked");
  CHECK(result->message().find("database locked for more than 200 ms") != std::string::npos);
  CHECK(result->message().find(db_path()) != std::string::npos);
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "a cancelled write retry never answers") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  bool answered = false;
  auto h = retry_when_locked(
      &loop, 5s, [&] { return store->remove_node("x"); }, [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 30ms);
  h.cancel();
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 100ms);
  CHECK_FALSE(answered);
}

TEST_CASE_METHOD(Fixture, "a write without a lock runs once, on the next loop turn") {
  open();
  int tries = 0;
  std::optional<Status> result;
  retry_when_locked(
      &loop, 1s,
      [&] {
        ++tries;
        NodeSpec spec;
        spec.id = "now";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) { result = s; });
  CHECK(tries == 0);
  CHECK_FALSE(result.has_value());
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 2s));
  CHECK(tries == 1);
  CHECK(result->ok());
  CHECK(store->get_node("now").ok());
}

TEST_CASE_METHOD(Fixture, "errors other than a lock are answered at once, not retried") {
  open();
  int tries = 0;
  std::optional<Status> result;
  retry_when_locked(
      &loop, 2s, [&] { ++tries; return store->remove_node("ghost"); }, [&](Status s) { result = s; });
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 2s));
  CHECK(tries == 1);
  CHECK(result->code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "retries back off and give up close to their limit") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  std::optional<Status> result;
  const uint64_t t0 = uv_hrtime();
  double answered_ms = 0;
  retry_when_locked(
      &loop, 300ms,
      [&] {
        ++tries;
        NodeSpec spec;
        spec.id = "x";
        auto r = store->add_node(spec);
        return r.ok() ? ok_status() : r.error();
      },
      [&](Status s) {
        answered_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
        result = s;
      });
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 5s));
  CHECK(result->reason() == "locked");
  CHECK(answered_ms >= 290);
  CHECK(answered_ms < 2000);
  // 0, 5, 15, 35, 75, 155, 255, 300 ms: growing delays, not a busy loop.
  CHECK(tries >= 4);
  CHECK(tries <= 12);
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "a write may cancel its own retry") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  bool answered = false;
  WriteRetryHandle handle;
  handle = retry_when_locked(
      &loop, 5s,
      [&] {
        ++tries;
        handle.cancel();
        return store->remove_node("x");
      },
      [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 100ms);
  CHECK(tries == 1);
  CHECK_FALSE(answered);
  locker.exec("ROLLBACK");
}
