// Store's batched statistics: queued in memory, written by the timer in one
// transaction, kept through another process's write lock.
#include "storage_fixture.h"

#include <cmath>
#include <limits>

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
  CHECK(store->flush_durations().count() == 0);  // flushes that met the lock are not timed
  CHECK(store->get_endpoint(id)->success_count == 500);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  CHECK(store->flush_durations().count() == 1);
  CHECK(store->flush_durations().sum() > 0);
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


// --- statistics that describe the endpoint (schema version 2) -----------------

namespace {

// TCP's SRTT (alpha = 1/8), one sample after the other: the reference the
// Store's merged deltas must agree with.
double srtt_of(const std::vector<double>& samples) {
  double r = samples.at(0);
  for (size_t i = 1; i < samples.size(); ++i) r += (samples[i] - r) / 8;
  return r;
}

// rtt_ms of the endpoint on `port` as another process reads it (-1: NULL).
double stored_rtt(const std::string& path, int port) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  const std::string sql = "SELECT rtt_ms FROM endpoints WHERE port = " + std::to_string(port);
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  double v = -1;
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_double(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

// The ports of a read's endpoints, in the order read.
std::vector<int> ports_of(const std::vector<Endpoint>& eps) {
  std::vector<int> out;
  for (const auto& e : eps) out.push_back(e.port);
  return out;
}
std::vector<int> ports_of(const Result<std::vector<Endpoint>>& eps) {
  REQUIRE(eps.ok());
  return ports_of(*eps);
}

}  // namespace

TEST_CASE_METHOD(Fixture, "the RTT is smoothed sample by sample, within one flush and across flushes") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2), ep("tcp", 3)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  const std::vector<double> samples = {100, 200, 50, 80, 31.25, 400, 7};
  // 100, 112.5, 104.6875, 101.6015625, ...: the first sample sets it.
  CHECK(srtt_of({100, 200, 50, 80}) == 101.6015625);
  const double expected = srtt_of(samples);

  // Port 1: every sample queued, one flush. The read before the flush
  // includes the queue.
  for (double s : samples) store->record_success(eps[0].id, 1000, s);
  REQUIRE(store->get_endpoint(eps[0].id)->rtt_ms.has_value());
  CHECK(*store->get_endpoint(eps[0].id)->rtt_ms == Approx(expected).epsilon(1e-12));
  // Port 2: a flush after each sample. Port 3: flushes after 1, 3 and 7.
  for (size_t i = 0; i < samples.size(); ++i) {
    store->record_success(eps[1].id, 1000, samples[i]);
    REQUIRE(store->flush().ok());
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    store->record_success(eps[2].id, 1000, samples[i]);
    if (i == 0 || i == 2) REQUIRE(store->flush().ok());
    if (i == 4) {
      // A sample recorded after a partial queue reads the same as flushed.
      CHECK(*store->get_endpoint(eps[2].id)->rtt_ms ==
            Approx(srtt_of({samples.begin(), samples.begin() + 5})).epsilon(1e-12));
    }
  }
  REQUIRE(store->flush().ok());
  for (int port = 1; port <= 3; ++port) {
    INFO("port " << port);
    CHECK(stored_rtt(db_path(), port) == Approx(expected).epsilon(1e-12));
  }
  auto read = store->endpoints_of("n1", std::nullopt);
  REQUIRE(read.ok());
  for (const auto& e : *read) {
    REQUIRE(e.rtt_ms.has_value());
    CHECK(*e.rtt_ms == Approx(expected).epsilon(1e-12));
    CHECK(e.success_count == static_cast<int64_t>(samples.size()));
  }
}

TEST_CASE_METHOD(Fixture, "a success without an RTT, or with no usable one, counts and leaves the RTT") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_success(id, 1000);
  REQUIRE(store->flush().ok());
  CHECK_FALSE(store->get_endpoint(id)->rtt_ms.has_value());
  Other o(db_path());
  CHECK(o.scalar("SELECT rtt_ms IS NULL FROM endpoints") == 1);
  store->record_success(id, 1001, -1.0);
  store->record_success(id, 1002, std::nan(""));
  store->record_success(id, 1003, 40.0);
  store->record_success(id, 1004);
  store->record_success(id, 1005, std::numeric_limits<double>::infinity());
  REQUIRE(store->flush().ok());
  const Endpoint e = *store->get_endpoint(id);
  CHECK(e.success_count == 6);
  REQUIRE(e.rtt_ms.has_value());
  CHECK(*e.rtt_ms == 40.0);
  store->record_success(id, 1006, 0.0);  // a zero RTT (loopback, coarse clock) is a sample
  REQUIRE(store->flush().ok());
  CHECK(*store->get_endpoint(id)->rtt_ms == 35.0);
}

TEST_CASE_METHOD(Fixture, "charged failures count in failure_count, uncharged ones apart, both in the run") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "refused", 1000);  // charged by default
  store->record_failure(id, "local_network", 1100, /*charged=*/false);
  store->record_failure(id, "local_network", 1200, /*charged=*/false);
  Endpoint queued = *store->get_endpoint(id);
  CHECK(queued.failure_count == 1);
  CHECK(queued.uncharged_failure_count == 2);
  CHECK(queued.consecutive_failures == 3);
  CHECK(queued.last_error == "local_network");
  REQUIRE(store->flush().ok());
  store->record_failure(id, "timeout", 1300, /*charged=*/true);
  store->record_failure(id, "timeout", 1400, /*charged=*/false);
  REQUIRE(store->flush().ok());
  Other o(db_path());
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 2);
  CHECK(o.scalar("SELECT uncharged_failure_count FROM endpoints") == 3);
  CHECK(o.scalar("SELECT consecutive_failures FROM endpoints") == 5);
  CHECK(o.scalar("SELECT last_failure_at FROM endpoints") == 1400);
  CHECK(o.text("SELECT last_error FROM endpoints") == "timeout");
  const Endpoint e = *store->get_endpoint(id);
  CHECK(e.failure_count == 2);
  CHECK(e.uncharged_failure_count == 3);
  CHECK(e.consecutive_failures == 5);
}

TEST_CASE_METHOD(Fixture, "a success ends the run of failures; the failures after it start a new one") {
  open();
  add("n1", {ep("tcp", 1), ep("tcp", 2), ep("tcp", 3)});
  auto eps = *store->endpoints_of("n1", std::nullopt);
  Other o(db_path());
  const auto consecutive = [&](int port) {
    return o.scalar("SELECT consecutive_failures FROM endpoints WHERE port = " + std::to_string(port));
  };
  // Port 1: two failures, flushed; then a success and two failures in one flush.
  store->record_failure(eps[0].id, "refused", 1);
  store->record_failure(eps[0].id, "refused", 2);
  REQUIRE(store->flush().ok());
  CHECK(consecutive(1) == 2);
  store->record_success(eps[0].id, 3);
  store->record_failure(eps[0].id, "timeout", 4);
  store->record_failure(eps[0].id, "timeout", 5, /*charged=*/false);
  CHECK(store->get_endpoint(eps[0].id)->consecutive_failures == 2);
  // Port 2: failures then a success, one flush: 0.
  store->record_failure(eps[1].id, "refused", 1);
  store->record_failure(eps[1].id, "refused", 2);
  store->record_success(eps[1].id, 3);
  // Port 3: failures across flushes add up.
  store->record_failure(eps[2].id, "refused", 1);
  REQUIRE(store->flush().ok());
  store->record_failure(eps[2].id, "refused", 2);
  REQUIRE(store->flush().ok());
  CHECK(consecutive(1) == 2);
  CHECK(consecutive(2) == 0);
  CHECK(consecutive(3) == 2);
  CHECK(o.scalar("SELECT success_count FROM endpoints WHERE port = 1") == 1);
  CHECK(o.scalar("SELECT failure_count FROM endpoints WHERE port = 1") == 3);
  // A success alone resets what is stored.
  store->record_success(eps[0].id, 6);
  REQUIRE(store->flush().ok());
  CHECK(consecutive(1) == 0);
  // Recording order decides the run, not the times given: a failure
  // recorded after a success with an older time still follows it.
  store->record_success(eps[2].id, 2000);
  store->record_failure(eps[2].id, "refused", 1500);
  REQUIRE(store->flush().ok());
  CHECK(consecutive(3) == 1);
  CHECK(o.scalar("SELECT last_success_at FROM endpoints WHERE port = 3") == 2000);
}

TEST_CASE_METHOD(Fixture, "outcomes queued through a foreign lock keep their order when they land") {
  open();
  add("n1", {ep("tcp", 1)});
  const int64_t id = (*store->endpoints_of("n1", std::nullopt))[0].id;
  store->record_failure(id, "refused", 1);
  REQUIRE(store->flush().ok());
  Other locker(db_path());
  REQUIRE(locker.exec("BEGIN EXCLUSIVE") == SQLITE_OK);
  store->record_success(id, 2, 10.0);
  CHECK(store->flush().reason() == "locked");
  store->record_failure(id, "timeout", 3);
  store->record_success(id, 4, 18.0);
  store->record_failure(id, "timeout", 5);
  store->record_failure(id, "timeout", 6, /*charged=*/false);
  CHECK(store->get_endpoint(id)->consecutive_failures == 2);
  REQUIRE(locker.exec("COMMIT") == SQLITE_OK);
  REQUIRE(run_until(&loop, [&] { return store->pending_stats() == 0; }, 2s));
  Other o(db_path());
  CHECK(o.scalar("SELECT consecutive_failures FROM endpoints") == 2);
  CHECK(o.scalar("SELECT success_count FROM endpoints") == 2);
  CHECK(o.scalar("SELECT failure_count FROM endpoints") == 3);
  CHECK(o.scalar("SELECT uncharged_failure_count FROM endpoints") == 1);
  CHECK(stored_rtt(db_path(), 1) == Approx(11.0).epsilon(1e-12));  // 10, then 10 + (18 - 10) / 8
}

TEST_CASE_METHOD(Fixture, "endpoints failing now rank after every endpoint that is not, in every read") {
  open();
  add("a", {ep("tcp", 1), ep("tcp", 2), ep("tcp", 3), ep("quic", 4)});
  add("b", {ep("tcp", 5), ep("tcp", 6)});
  {
    Other o(db_path());
    // Port 1: the best record but failing now; port 3: a worse record,
    // failing now; port 2: never tried; quic 4: 1 success. Node b: port 5
    // failing now (written by another process), port 6 fresh.
    REQUIRE(o.exec("UPDATE endpoints SET success_count = 50, last_success_at = 900, consecutive_failures = 1 "
                   "WHERE port = 1;"
                   "UPDATE endpoints SET success_count = 5, consecutive_failures = 4 WHERE port = 3;"
                   "UPDATE endpoints SET success_count = 1 WHERE port = 4;"
                   "UPDATE endpoints SET success_count = 9, consecutive_failures = 2 WHERE port = 5;") ==
            SQLITE_OK);
  }
  // Among those failing now, the old order: 50 successes before 5.
  CHECK(ports_of(store->endpoints_of("a", std::nullopt)) == std::vector<int>{4, 2, 1, 3});
  CHECK(ports_of(store->endpoints_of("a", std::string("tcp"))) == std::vector<int>{2, 1, 3});
  auto whole = store->node_with_endpoints("a", std::nullopt);
  REQUIRE(whole.ok());
  CHECK(ports_of(whole->endpoints) == std::vector<int>{4, 2, 1, 3});
  CHECK(ports_of(store->endpoints_of_nodes({"b", "a"})) == std::vector<int>{6, 5, 4, 2, 1, 3});
  auto ranked = store->endpoints_of("a", std::nullopt);
  REQUIRE(ranked.ok());
  const Endpoint first = (*ranked)[2];
  REQUIRE(first.port == 1);
  CHECK(first.consecutive_failures == 1);

  // A queued success puts port 1 back in front at once; a queued failure
  // (uncharged, even) sends the fresh endpoint behind.
  store->record_success(first.id, 1000, 12.0);
  const int64_t port2 = (*ranked)[1].id;
  store->record_failure(port2, "local_network", 1001, /*charged=*/false);
  CHECK(ports_of(store->endpoints_of("a", std::nullopt)) == std::vector<int>{1, 4, 3, 2});
  REQUIRE(store->flush().ok());
  CHECK(ports_of(store->endpoints_of("a", std::nullopt)) == std::vector<int>{1, 4, 3, 2});

  // The comparator itself: the run outranks every other field.
  Endpoint x, y;
  x.id = 1;
  x.success_count = 100;
  x.consecutive_failures = 1;
  y.id = 2;
  y.failure_count = 100;
  CHECK(Store::ranks_before(y, x));
  CHECK_FALSE(Store::ranks_before(x, y));
  x.consecutive_failures = 0;
  CHECK(Store::ranks_before(x, y));
  y.consecutive_failures = 7;
  x.consecutive_failures = 1;
  CHECK(Store::ranks_before(x, y));  // both failing now: the old order, not the run's length
}
