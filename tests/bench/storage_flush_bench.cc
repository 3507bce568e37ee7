// Storage figures, run by hand (not a test):
//   storage_flush_bench [--scale NODES]
// 1. time to flush 10,000 queued statistics updates in one transaction, for
//    10,000 distinct endpoints and for 10,000 updates to 100 endpoints, and
//    the cost of one record_* call (median of several runs);
// 2. with --scale N: a database of N nodes with 2 endpoints each, and the
//    time of the reads the daemon serves (page of nodes, one node's ranked
//    endpoints, endpoints of a page of nodes, counts) and of a flush there.
#include <sqlite3.h>
#include <stdlib.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/store.h"

using namespace connmgr;

namespace {

double ms_since(uint64_t t0) { return static_cast<double>(uv_hrtime() - t0) / 1e6; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::unique_ptr<Store> open_store(uv_loop_t* loop, const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.flush_interval = std::chrono::hours(1);  // flushes are triggered by hand here
  auto s = Store::open(loop, o);
  if (!s) {
    fprintf(stderr, "open: %s\n", s.error().message().c_str());
    exit(1);
  }
  return std::move(s).value();
}

void close_store(uv_loop_t* loop, std::unique_ptr<Store>& store) {
  store->close();
  store.reset();
  uv_run(loop, UV_RUN_NOWAIT);  // the timer's close callback
}

// Endpoints of one node, the ids of `count` endpoints.
std::vector<int64_t> make_endpoints(Store& store, const std::string& node, int count) {
  NodeSpec spec;
  spec.id = node;
  for (int p = 1; p <= count; ++p) {
    EndpointSpec e;
    e.protocol = "tcp";
    e.address = "10.0.0.1";
    e.port = p;
    spec.endpoints.push_back(e);
  }
  auto r = store.add_node(spec);
  if (!r) {
    fprintf(stderr, "add_node: %s\n", r.error().message().c_str());
    exit(1);
  }
  std::vector<int64_t> ids;
  for (const auto& e : r->endpoints) ids.push_back(e.id);
  return ids;
}

void flush_figures(uv_loop_t* loop, const std::string& dir) {
  const int kRuns = 7;
  auto store = open_store(loop, dir + "/flush.db");
  const auto wide = make_endpoints(*store, "wide", 10000);
  const auto narrow = make_endpoints(*store, "narrow", 100);

  std::vector<double> wide_ms, narrow_ms, record_ns;
  for (int run = 0; run < kRuns; ++run) {
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < wide.size(); ++i) {
      if (i % 4 == 0) store->record_failure(wide[i], "refused", 1000 + run);
      else store->record_success(wide[i], 1000 + run);
    }
    record_ns.push_back(static_cast<double>(uv_hrtime() - t0) / static_cast<double>(wide.size()));
    t0 = uv_hrtime();
    if (Status s = store->flush(); !s.ok()) fprintf(stderr, "flush: %s\n", s.message().c_str());
    wide_ms.push_back(ms_since(t0));

    for (int i = 0; i < 10000; ++i) {
      const int64_t id = narrow[static_cast<size_t>(i) % narrow.size()];
      if (i % 3 == 0) store->record_failure(id, "timeout", 1000 + i);
      else store->record_success(id, 1000 + i);
    }
    t0 = uv_hrtime();
    if (Status s = store->flush(); !s.ok()) fprintf(stderr, "flush: %s\n", s.message().c_str());
    narrow_ms.push_back(ms_since(t0));
  }
  printf("flush 10,000 updates to 10,000 distinct endpoints: %.2f ms (median of %d; min %.2f, max %.2f)\n",
         median(wide_ms), kRuns, *std::min_element(wide_ms.begin(), wide_ms.end()),
         *std::max_element(wide_ms.begin(), wide_ms.end()));
  printf("flush 10,000 updates to 100 endpoints:            %.2f ms (median of %d)\n",
         median(narrow_ms), kRuns);
  printf("record_success/record_failure (queue only):       %.0f ns per call (median)\n",
         median(record_ns));
  close_store(loop, store);
}

void bulk_load(const std::string& path, int nodes) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  sqlite3_stmt* n = nullptr;
  sqlite3_stmt* e = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO nodes (id, created_at) VALUES (?1, 0)", -1, &n, nullptr);
  sqlite3_prepare_v2(db,
                     "INSERT INTO endpoints (node_id, protocol, address, port, success_count, "
                     "failure_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                     -1, &e, nullptr);
  char id[32];
  for (int i = 0; i < nodes; ++i) {
    snprintf(id, sizeof id, "node-%08d", i);
    sqlite3_bind_text(n, 1, id, -1, SQLITE_STATIC);
    sqlite3_step(n);
    sqlite3_reset(n);
    for (int k = 0; k < 2; ++k) {
      sqlite3_bind_text(e, 1, id, -1, SQLITE_STATIC);
      sqlite3_bind_text(e, 2, k == 0 ? "tcp" : "quic", -1, SQLITE_STATIC);
      sqlite3_bind_text(e, 3, "192.0.2.1", -1, SQLITE_STATIC);
      sqlite3_bind_int(e, 4, 1000 + (i % 60000));
      sqlite3_bind_int(e, 5, (i * 7 + k) % 13);
      sqlite3_bind_int(e, 6, (i * 3 + k) % 5);
      sqlite3_step(e);
      sqlite3_reset(e);
    }
  }
  sqlite3_finalize(n);
  sqlite3_finalize(e);
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK)
    fprintf(stderr, "bulk load: %s\n", sqlite3_errmsg(db));
  sqlite3_close(db);
}

void scale_figures(uv_loop_t* loop, const std::string& dir, int nodes) {
  const std::string path = dir + "/scale.db";
  {
    auto store = open_store(loop, path);  // creates the schema
    close_store(loop, store);
  }
  uint64_t t0 = uv_hrtime();
  bulk_load(path, nodes);
  printf("\nscale: %d nodes, %d endpoints (bulk load %.1f s, file %.0f MB)\n", nodes, 2 * nodes,
         ms_since(t0) / 1000,
         static_cast<double>(std::filesystem::file_size(path)) / 1e6);
  auto store = open_store(loop, path);
  char id[32];
  const int kQueries = 1000;

  t0 = uv_hrtime();
  auto first = store->list_nodes(1000, std::nullopt);
  printf("list_nodes(1000) first page:            %.3f ms\n", ms_since(t0));
  snprintf(id, sizeof id, "node-%08d", nodes / 2);
  t0 = uv_hrtime();
  auto middle = store->list_nodes(1000, std::string(id));
  printf("list_nodes(1000) after a middle cursor: %.3f ms (%zu nodes, next %s)\n", ms_since(t0),
         middle->nodes.size(), middle->next ? "set" : "empty");
  std::vector<std::string> ids;
  for (const auto& n : middle->nodes) ids.push_back(n.id);
  t0 = uv_hrtime();
  auto eps = store->endpoints_of_nodes(ids);
  printf("endpoints_of_nodes(1000 nodes):         %.3f ms (%zu endpoints)\n", ms_since(t0),
         eps->size());

  t0 = uv_hrtime();
  for (int q = 0; q < kQueries; ++q) {
    snprintf(id, sizeof id, "node-%08d", (q * 7919) % nodes);
    if (!store->get_node(id)) fprintf(stderr, "get_node failed\n");
  }
  printf("get_node:                               %.1f us each\n", ms_since(t0) * 1000 / kQueries);
  t0 = uv_hrtime();
  for (int q = 0; q < kQueries; ++q) {
    snprintf(id, sizeof id, "node-%08d", (q * 7919) % nodes);
    if (store->endpoints_of(id, std::nullopt)->size() != 2) fprintf(stderr, "endpoints_of?\n");
  }
  printf("endpoints_of (ranked):                  %.1f us each\n", ms_since(t0) * 1000 / kQueries);
  t0 = uv_hrtime();
  for (int q = 0; q < kQueries; ++q) {
    snprintf(id, sizeof id, "node-%08d", (q * 7919) % nodes);
    if (store->endpoints_of(id, std::string("quic"))->size() != 1) fprintf(stderr, "quic?\n");
  }
  printf("endpoints_of (protocol quic):           %.1f us each\n", ms_since(t0) * 1000 / kQueries);
  t0 = uv_hrtime();
  auto c = store->counts();
  printf("counts() first call (two count(*)):     %.3f ms (%lld nodes, %lld endpoints)\n",
         ms_since(t0), static_cast<long long>(c->nodes), static_cast<long long>(c->endpoints));
  t0 = uv_hrtime();
  for (int q = 0; q < kQueries; ++q) c = store->counts();
  printf("counts() again, nothing committed:      %.1f us each\n", ms_since(t0) * 1000 / kQueries);

  for (int q = 0; q < 10000; ++q) store->record_success(1 + (static_cast<int64_t>(q) * 104729) % (2 * nodes), 5000);
  t0 = uv_hrtime();
  if (Status s = store->flush(); !s.ok()) fprintf(stderr, "flush: %s\n", s.message().c_str());
  printf("flush 10,000 distinct endpoints here:   %.2f ms (includes SQLite's automatic WAL checkpoint)\n",
         ms_since(t0));
  t0 = uv_hrtime();
  c = store->counts();
  printf("counts() after our own flush:           %.3f ms (still cached: statistics add no rows)\n",
         ms_since(t0));
  (void)first;
  close_store(loop, store);
}

}  // namespace

int main(int argc, char** argv) {
  int scale = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--scale NODES]\n", argv[0]);
      return 2;
    }
  }
  char tmpl[] = "/tmp/connmgr-storage-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  uv_loop_t loop;
  uv_loop_init(&loop);
  flush_figures(&loop, dir);
  if (scale > 0) scale_figures(&loop, dir, scale);
  uv_loop_close(&loop);
  std::filesystem::remove_all(dir);
  return 0;
}
