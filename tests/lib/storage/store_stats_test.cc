// Store's batched statistics: queued in memory, written by the timer in one
// transaction, kept through another process's write lock.
#include "storage_fixture.h"

using namespace connmgr;
using namespace connmgr::storage_test;

// --- statistics ---------------------------------------------------------------

TEST_CASE_METHOD(Fixture, "statistics are queued, then written together by the timer") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  Other o(db_path());
  const int64_t before = o.scalar("PRAGMA data_version");
  store->record_success(eps[0].id, 1000);
  store->record_success(eps[0].id, 2000);
  store->record_failure(eps[1].id, "refused", 1500);
  store->record_failure(eps[1].id, "timeout", 2500);
  CHECK(store->pending_stats() == 2);
  CHECK(o.scalar("SELECT sum(success_count) + sum(failure_count) FROM endpoints") == 0);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port=1") == 2);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints WHERE port=1") == 2000);
  CHECK(o.scalar("SELECT failure_count FROM endpoints WHERE port=2") == 2);
  CHECK(o.scalar("SELECT last_failure_at FROM endpoints WHERE port=2") == 2500);
  CHECK(o.text("SELECT last_error FROM endpoints WHERE port=2") == "timeout");
  // data_version moves once per commit made by another connection.
  CHECK(o.scalar("PRAGMA data_version") == before + 1);
}

TEST_CASE_METHOD(Fixture, "a burst of statistics is written in slices, one per loop turn, and all of it lands") {
  open();
  std::vector<EndpointSpec> specs;
  for (int port = 1; port <= 700; ++port) specs.push_back(ep("tcp", port));
  add("n1", specs);
  auto eps = *store->endpoints_of("n1", std::nullopt);
  REQUIRE(eps.size() == 700);
  Other o(db_path());
  for (const auto& e : eps) store->record_success(e.id, 1000);
  CHECK(store->pending_stats() == 700);
  // The first slice: 256 rows, not all 700 in one transaction holding the
  // loop. UV_RUN_NOWAIT runs the due timers once, so one turn writes one
  // slice however slow the machine (UV_RUN_ONCE would run timers again
  // after polling, and a slow slice lets the next one fall due there).
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (store->pending_stats() == 700 && std::chrono::steady_clock::now() < deadline) {
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  CHECK(store->pending_stats() == 700 - 256);
  CHECK(o.scalar("SELECT sum(success_count) FROM endpoints") == 700 - static_cast<int64_t>(store->pending_stats()));
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  CHECK(o.scalar("SELECT sum(success_count) FROM endpoints") == 700);
}

TEST_CASE_METHOD(Fixture, "reads include statistics not yet flushed") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  REQUIRE(eps[0].port == 1);
  store->record_failure(eps[0].id, "refused", 1000);
  auto again = *store->endpoints_of("n1", std::nullopt);
  CHECK(again[0].port == 2);  // the failure already counts
  CHECK(again[1].failure_count == 1);
  CHECK(again[1].last_error == "refused");
  CHECK(store->get_endpoint(eps[0].id)->failure_count == 1);
}

TEST_CASE_METHOD(Fixture, "statistics wait out another process's write lock and none are lost") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  for (int i = 0; i < 500; ++i) store->record_success(id, 1000 + i);
  // Reads keep working under the foreign write lock (WAL).
  CHECK(store->get_node("n1").ok());
  const auto flushed = store->flush();
  CHECK(flushed.reason() == "locked");
  connmgr::test::run_for(&loop, 300ms);  // several timer ticks meet the lock
  CHECK(store->pending_stats() == 1);
  CHECK(store->get_endpoint(id)->success_count == 500);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 500);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints") == 1499);
}

TEST_CASE_METHOD(Fixture, "close flushes what is queued") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "reset", 42);
  CHECK(store->close().ok());
  store.reset();
  Other o(db_path());
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 1);
  CHECK(o.text("SELECT last_error FROM endpoints") == "reset");
}

TEST_CASE_METHOD(Fixture, "a Store destroyed with its flush timer armed writes once and never calls back") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_success(id, 7);
  REQUIRE(uv_loop_alive(&loop) != 0);  // the flush timer is armed
  store.reset();  // no close(): the destructor flushes and closes the timer
  // The timer's memory goes in its close callback; nothing else runs (under
  // ASan a callback into the freed Store would be reported).
  connmgr::test::run_for(&loop, 120ms);
  CHECK(uv_loop_alive(&loop) == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 1);
}

TEST_CASE_METHOD(Fixture, "statistics of an endpoint removed meanwhile are dropped") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  store->record_success(eps[0].id, 1);
  store->record_success(eps[1].id, 1);
  {
    Other o(db_path());
    REQUIRE(o.exec("DELETE FROM endpoints WHERE port = 1") == SQLITE_OK);
  }
  CHECK(store->flush().ok());
  CHECK(store->pending_stats() == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port = 2") == 1);
}

TEST_CASE_METHOD(Fixture, "flushing 10,000 queued updates is one commit, timed") {
  open();
  NodeSpec spec;
  spec.id = "big";
  for (int p = 1; p <= 10000; ++p) spec.endpoints.push_back(ep("tcp", p));
  REQUIRE(store->add_node(spec).ok());
  auto eps = *store->endpoints_of("big", std::nullopt);
  REQUIRE(eps.size() == 10000);
  Other o(db_path());
  int64_t version = o.scalar("PRAGMA data_version");

  for (const auto& e : eps) store->record_success(e.id, 1000);
  CHECK(store->pending_stats() == 10000);
  uint64_t t0 = uv_hrtime();
  REQUIRE(store->flush().ok());
  const double distinct_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  CHECK(o.scalar("PRAGMA data_version") == version + 1);
  CHECK(o.scalar("SELECT sum(success_count) FROM endpoints") == 10000);
  version = o.scalar("PRAGMA data_version");

  for (int i = 0; i < 10000; ++i) store->record_failure(eps[static_cast<size_t>(i % 100)].id, "refused", 2000 + i);
  CHECK(store->pending_stats() == 100);
  t0 = uv_hrtime();
  REQUIRE(store->flush().ok());
  const double narrow_ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  CHECK(o.scalar("PRAGMA data_version") == version + 1);
  CHECK(o.scalar("SELECT sum(failure_count) FROM endpoints") == 10000);
  CHECK(o.scalar("SELECT max(last_failure_at) FROM endpoints") == 11999);
  // Figures for the record, not assertions: these machines are shared.
  // tests/bench/storage_flush_bench gives medians and the 2M-row case.
  WARN("flush of 10,000 queued updates: " << distinct_ms << " ms to 10,000 endpoints, "
                                          << narrow_ms << " ms to 100 endpoints");
}

TEST_CASE_METHOD(Fixture, "the flush timer runs only while something is queued") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  CHECK(uv_loop_alive(&loop) == 0);
  store->record_success(id, 1);
  CHECK(uv_loop_alive(&loop) != 0);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  // Nothing queued: the loop has nothing of ours to wake up for.
  CHECK(uv_loop_alive(&loop) == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 1);
}

TEST_CASE_METHOD(Fixture, "nothing is written before the flush interval, everything after it") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  Other o(db_path());
  for (int i = 0; i < 100; ++i) store->record_success(id, i);
  uv_run(&loop, UV_RUN_NOWAIT);  // one loop turn: the 50 ms timer is not due
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 0);
  const uint64_t t0 = uv_hrtime();
  REQUIRE(run_until(&loop, [&] { return o.scalar("SELECT success_count FROM endpoints") == 100; }, 2s));
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  CHECK(ms < 1500);  // flush_interval is 50 ms; generous for a shared machine
}

TEST_CASE_METHOD(Fixture, "the last error is that of the latest failure, whatever the recording order") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "timeout", 2000);
  store->record_failure(id, "refused", 1000);  // older, recorded later
  store->record_success(id, 1500);
  REQUIRE(store->flush().ok());
  store->record_failure(id, "reset", 1200);  // older than what is stored
  REQUIRE(store->flush().ok());
  Other o(db_path());
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 3);
  CHECK(o.scalar("SELECT last_failure_at FROM endpoints") == 2000);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints") == 1500);
  CHECK(o.text("SELECT last_error FROM endpoints") == "timeout");
  store->record_failure(id, "tls", 1900);  // queued, older than the stored one
  CHECK(store->get_endpoint(id)->last_error == "timeout");
  CHECK(store->get_endpoint(id)->failure_count == 4);
}

TEST_CASE_METHOD(Fixture, "statistics recorded during a foreign lock merge with those already queued") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2), ep("tcp", 3)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  store->record_success(eps[0].id, 10);
  store->record_failure(eps[1].id, "refused", 11);
  CHECK(store->flush().reason() == "locked");
  connmgr::test::run_for(&loop, 120ms);  // timer ticks meet the lock too
  store->record_success(eps[0].id, 20);
  store->record_failure(eps[1].id, "timeout", 21);
  store->record_success(eps[2].id, 22);
  CHECK(store->pending_stats() == 3);
  // Reads go on under the lock and include the queue.
  CHECK(store->get_endpoint(eps[0].id)->success_count == 2);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  Other o(db_path());
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port = 1") == 2);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints WHERE port = 1") == 20);
  CHECK(o.scalar("SELECT failure_count FROM endpoints WHERE port = 2") == 2);
  CHECK(o.text("SELECT last_error FROM endpoints WHERE port = 2") == "timeout");
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port = 3") == 1);
}

TEST_CASE_METHOD(Fixture, "close gives up on a lock held past close_lock_limit and says locked") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_success(id, 1);
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  const uint64_t t0 = uv_hrtime();
  Status s = store->close();  // close_lock_limit 200 ms
  const double ms = static_cast<double>(uv_hrtime() - t0) / 1e6;
  CHECK(s.reason() == "locked");
  CHECK(s.message().find(db_path()) != std::string::npos);
  CHECK(ms >= 150);
  CHECK(ms < 5000);
  locker.exec("ROLLBACK");
}

TEST_CASE_METHOD(Fixture, "close waits out a short foreign lock and lands the queue") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "dns", 7);
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    sqlite3* db = nullptr;
    if (sqlite3_open(db_path().c_str(), &db) != SQLITE_OK) _exit(1);
    if (sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) _exit(2);
    if (write(ready[1], "x", 1) != 1) _exit(3);
    usleep(100 * 1000);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    _exit(0);
  }
  close(ready[1]);
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  CHECK(store->flush().reason() == "locked");
  CHECK(store->close().ok());  // close_lock_limit 200 ms > the 100 ms lock
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WEXITSTATUS(status) == 0);
  Other o(db_path());
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 1);
  CHECK(o.text("SELECT last_error FROM endpoints") == "dns");
}

