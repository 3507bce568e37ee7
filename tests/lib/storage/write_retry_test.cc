// WriteRetry and WriteRetries against a real foreign write
// lock (a second connection holding BEGIN EXCLUSIVE).
#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

// --- write retries ------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "a write that meets a lock is retried until the lock is gone") {
  open();
  WriteRetries retries;
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  std::optional<Status> result;
  retries.start(
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
  WriteRetries retries;
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  std::optional<Status> result;
  retries.start(
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
  WriteRetry retry(&loop, 5s, [&] { return store->remove_node("x"); }, [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 30ms);
  retry.cancel();
  CHECK(retry.ended());
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 100ms);
  CHECK_FALSE(answered);
}

TEST_CASE_METHOD(Fixture, "a write retry destroyed with a retry pending never writes or answers again") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  bool answered = false;
  auto retry = std::make_unique<WriteRetry>(
      &loop, 5s, [&] { ++tries; return store->remove_node("x"); }, [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 30ms);
  REQUIRE(tries >= 1);
  const int before = tries;
  retry.reset();  // its timer is armed for the next attempt
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 100ms);
  CHECK(tries == before);
  CHECK_FALSE(answered);
}

TEST_CASE_METHOD(Fixture, "a set of write retries forgets those that answered and cancels the rest") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int answers = 0;
  auto retries = std::make_unique<WriteRetries>();
  // A write that is not locked (a missing node is read, not written) answers at once.
  retries->start(&loop, 5s, [&] { return Status(); }, [&](Status) { ++answers; });
  const auto held = retries->start(&loop, 5s, [&] { return store->remove_node("x"); }, [&](Status) { ++answers; });
  retries->start(&loop, 5s, [&] { return store->remove_node("y"); }, [&](Status) { ++answers; });
  CHECK(retries->running() == 3);
  connmgr::test::run_for(&loop, 30ms);
  CHECK(answers == 1);
  CHECK(retries->running() == 2);
  retries->cancel(held);
  CHECK(retries->running() == 1);
  retries.reset();  // cancels the last one
  locker.exec("COMMIT");
  connmgr::test::run_for(&loop, 100ms);
  CHECK(answers == 1);
}

TEST_CASE_METHOD(Fixture, "a write without a lock runs once, on the next loop turn") {
  open();
  WriteRetries retries;
  int tries = 0;
  std::optional<Status> result;
  retries.start(
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
  WriteRetries retries;
  int tries = 0;
  std::optional<Status> result;
  retries.start(
      &loop, 2s, [&] { ++tries; return store->remove_node("ghost"); }, [&](Status s) { result = s; });
  REQUIRE(run_until(&loop, [&] { return result.has_value(); }, 2s));
  CHECK(tries == 1);
  CHECK(result->code() == ErrorCode::kNodeNotFound);
}

TEST_CASE_METHOD(Fixture, "retries back off and give up close to their limit") {
  open();
  WriteRetries retries;
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  std::optional<Status> result;
  const uint64_t t0 = uv_hrtime();
  double answered_ms = 0;
  retries.start(
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
  std::unique_ptr<WriteRetry> retry;
  retry = std::make_unique<WriteRetry>(
      &loop, 5s,
      [&] {
        ++tries;
        retry->cancel();
        return store->remove_node("x");
      },
      [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 100ms);
  CHECK(tries == 1);
  CHECK(retry->ended());
  CHECK_FALSE(answered);
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "a write may cancel its own retry in a set, which then forgets it") {
  open();
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  int tries = 0;
  bool answered = false;
  WriteRetries retries;
  WriteRetries::Id id = 0;
  id = retries.start(
      &loop, 5s,
      [&] {
        ++tries;
        retries.cancel(id);
        return store->remove_node("x");
      },
      [&](Status) { answered = true; });
  connmgr::test::run_for(&loop, 100ms);
  CHECK(tries == 1);
  CHECK(retries.running() == 0);
  CHECK_FALSE(answered);
  locker.exec("ROLLBACK");
}
