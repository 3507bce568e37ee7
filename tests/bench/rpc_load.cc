// rpc_load: the benchmark's load generator for connmgrd's JSON-RPC socket.
// One thread, one libuv loop, many clients: the same shape as redis-benchmark,
// which it is compared against, so that neither side gets more threads.
//
//   rpc_load rate SOCK CLIENTS PIPELINE SECONDS [LINE]
//       CLIENTS connections, each keeping PIPELINE requests (LINE, default a
//       `status` call) in flight, for SECONDS. Prints
//       "requests=N seconds=S rate=R p50_us=.. p99_us=.. errors=E".
//   rpc_load cycle SOCK SLOTS CYCLES PREFIX [CONNECTIONS]
//       SLOTS cycles in flight: slot i connects node PREFIX<i> (no wait, no
//       retry) and once it is up disconnects it, CYCLES times in all, over
//       CONNECTIONS sockets (default: one per slot). Prints
//       "cycles=N seconds=S rate=R failures=F".
//   rpc_load connect-many SOCK COUNT PREFIX IN_FLIGHT [RETRY_MS]
//       connects nodes PREFIX0 .. PREFIX<COUNT-1>, at most IN_FLIGHT at a time,
//       over 8 clients; an attempt that fails is sent again after RETRY_MS
//       (default 50) until it succeeds or 10 s pass. Prints
//       "connected=N failed=F seconds=S rate=R".
//   rpc_load probe SOCK SECONDS INTERVAL_MS [SAMPLES_FILE]
//       one client sends `status`, waits for the answer, sleeps INTERVAL_MS,
//       for SECONDS. Prints "samples=N p50_us=.. p99_us=.. max_us=.. errors=E";
//       with SAMPLES_FILE, also each sample there as "SENT_S LATENCY_US"
//       (SENT_S on CLOCK_MONOTONIC), so that a window can be cut out of them.
//
// Every loop is bounded in time; the tool exits 1 if the daemon goes away.
#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr const char* kStatusLine = R"({"jsonrpc":"2.0","id":1,"method":"status"})";

uv_loop_t* g_loop = nullptr;
const char* g_socket = nullptr;

double now_s() { return static_cast<double>(uv_hrtime()) / 1e9; }

// An answer line is an error when its envelope's first member after the id
// is "error": the daemon writes jsonrpc, id, then result or error.
bool is_error_answer(std::string_view line) {
  const auto e = line.find(R"(,"error":)");
  const auto r = line.find(R"(,"result":)");
  return e != std::string_view::npos && (r == std::string_view::npos || e < r);
}

// One client connection: writes lines, hands each answer line to on_line.
struct Client {
  uv_pipe_t pipe{};
  uv_connect_t connect_req{};
  std::string in;
  std::string out;       // lines queued, not yet written
  bool reading = false;  // inside consume(): queue, write after
  std::function<void(std::string_view)> on_line;
  std::function<void()> on_connected;
  std::deque<double> sent;  // when each request still unanswered was sent
  bool connected = false;

  void open() {
    uv_pipe_init(g_loop, &pipe, 0);
    pipe.data = this;
    connect_req.data = this;
    uv_pipe_connect(&connect_req, &pipe, g_socket, [](uv_connect_t* req, int status) {
      auto* self = static_cast<Client*>(req->data);
      if (status != 0) {
        fprintf(stderr, "rpc_load: connect %s: %s\n", g_socket, uv_strerror(status));
        exit(1);
      }
      self->connected = true;
      uv_read_start(
          reinterpret_cast<uv_stream_t*>(&self->pipe),
          [](uv_handle_t*, size_t, uv_buf_t* b) {
            static char scratch[256 * 1024];
            *b = uv_buf_init(scratch, sizeof scratch);
          },
          [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
            auto* c = static_cast<Client*>(s->data);
            if (n < 0) {
              fprintf(stderr, "rpc_load: the daemon closed the connection: %s\n",
                      uv_strerror(static_cast<int>(n)));
              exit(1);
            }
            c->consume(std::string_view(b->base, static_cast<size_t>(n)));
          });
      if (self->on_connected) self->on_connected();
    });
  }

  void consume(std::string_view chunk) {
    in.append(chunk);
    size_t start = 0;
    reading = true;
    for (;;) {
      const auto nl = in.find('\n', start);
      if (nl == std::string::npos) break;
      on_line(std::string_view(in).substr(start, nl - start));
      start = nl + 1;
    }
    reading = false;
    in.erase(0, start);
    flush();
  }

  // Queues `text` (one or more whole lines). Lines queued while answers are
  // being read go out in one write after the read, as a pipelining client
  // would send them (one write per request would make the loader the bound).
  void send(std::string_view text) {
    out.append(text);
    if (!reading) flush();
  }

  void flush() {
    if (out.empty()) return;
    // Straight to the socket when it takes it all, as a plain client's
    // write() would: a uv_write costs a request, a callback a loop turn
    // later and an epoll_ctl, which made the loader slower than
    // redis-benchmark at one request in flight.
    uv_buf_t whole = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
    const int sent = uv_try_write(reinterpret_cast<uv_stream_t*>(&pipe), &whole, 1);
    if (sent == static_cast<int>(out.size())) {
      out.clear();
      return;
    }
    if (sent > 0) out.erase(0, static_cast<size_t>(sent));
    struct Write {
      uv_write_t req;
      std::string text;
    };
    auto* w = new Write{{}, std::move(out)};
    out.clear();
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->text.data(), static_cast<unsigned>(w->text.size()));
    uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipe), &b, 1,
             [](uv_write_t* req, int) { delete static_cast<Write*>(req->data); });
  }
};

std::string line_for(const char* method, const std::string& node, int64_t id) {
  return std::string(R"({"jsonrpc":"2.0","id":)") + std::to_string(id) + R"(,"method":")" + method +
         R"(","params":{"node_id":")" + node + "\"}}\n";
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

// A timer that stops the loop after `seconds`, whatever is still running.
void stop_after(double seconds) {
  auto* t = new uv_timer_t;
  uv_timer_init(g_loop, t);
  uv_timer_start(t, [](uv_timer_t*) { uv_stop(g_loop); }, static_cast<uint64_t>(seconds * 1000), 0);
}

int run_rate(int clients, int pipeline, double seconds, std::string line) {
  if (line.empty() || line.back() != '\n') line += '\n';
  std::vector<std::unique_ptr<Client>> all;
  // Latency of every answer: the time since the request it answers was sent
  // (answers on one socket come in order for `status`).
  std::vector<double> latencies;
  latencies.reserve(4'000'000);
  long requests = 0, errors = 0;
  double begin = 0;
  bool measuring = false;
  int ready = 0;
  std::string burst;
  for (int i = 0; i < pipeline; ++i) burst += line;
  for (int i = 0; i < clients; ++i) {
    auto c = std::make_unique<Client>();
    Client* cp = c.get();
    c->on_connected = [&] {
      // Start together once every client is connected.
      if (++ready < clients) return;
      begin = now_s();
      measuring = true;
      stop_after(seconds);
      for (auto& each : all) {
        each->sent.assign(static_cast<size_t>(pipeline), begin);
        each->send(burst);
      }
    };
    c->on_line = [&, cp](std::string_view answer) {
      const double t = now_s();
      ++requests;
      if (is_error_answer(answer)) ++errors;
      if (!cp->sent.empty()) {
        latencies.push_back((t - cp->sent.front()) * 1e6);
        cp->sent.pop_front();
      }
      cp->sent.push_back(t);
      cp->send(line);
    };
    all.push_back(std::move(c));
  }
  for (auto& c : all) c->open();
  uv_run(g_loop, UV_RUN_DEFAULT);
  const double elapsed = now_s() - begin;
  if (!measuring) return 1;
  printf("requests=%ld seconds=%.3f rate=%.0f p50_us=%.1f p99_us=%.1f errors=%ld\n", requests, elapsed,
         static_cast<double>(requests) / elapsed, percentile(latencies, 0.50),
         percentile(latencies, 0.99), errors);
  return errors == 0 ? 0 : 1;
}

// The id the daemon echoed: the first number after "id":.
long id_of(std::string_view answer) {
  const auto at = answer.find(R"("id":)");
  return at == std::string_view::npos ? -1 : atol(answer.data() + at + 5);
}

// SLOTS cycles in flight over CONNECTIONS sockets (slot i on socket
// i % CONNECTIONS); a request's id names its slot (id % SLOTS), since
// answers on a shared socket may come in any order.
int run_cycle(int slots, long cycles, const std::string& prefix, int connections) {
  if (connections < 1 || connections > slots) connections = slots;
  std::vector<std::unique_ptr<Client>> all;
  struct Slot {
    std::string node;
    bool connecting = false;
    long round = 0;
  };
  std::vector<Slot> state(static_cast<size_t>(slots));
  long started = 0, done = 0, failures = 0;
  double begin = 0;
  int ready = 0;
  stop_after(600);  // a bound, far above any sane run
  auto send = [&](int slot, const char* method) {
    Slot& st = state[static_cast<size_t>(slot)];
    const int64_t id = static_cast<int64_t>(st.round++) * slots + slot;
    all[static_cast<size_t>(slot % connections)]->send(line_for(method, st.node, id));
  };
  auto start_cycle = [&](int slot) {
    if (started >= cycles) return;
    ++started;
    state[static_cast<size_t>(slot)].connecting = true;
    send(slot, "connect");
  };
  for (int i = 0; i < slots; ++i) state[static_cast<size_t>(i)].node = prefix + std::to_string(i);
  for (int c = 0; c < connections; ++c) {
    auto client = std::make_unique<Client>();
    client->on_connected = [&] {
      if (++ready < connections) return;
      begin = now_s();
      for (int i = 0; i < slots; ++i) start_cycle(i);
    };
    client->on_line = [&](std::string_view answer) {
      const long id = id_of(answer);
      if (id < 0) return;
      const int slot = static_cast<int>(id % slots);
      Slot& st = state[static_cast<size_t>(slot)];
      if (st.connecting) {
        st.connecting = false;
        if (!is_error_answer(answer)) return send(slot, "disconnect");
        ++failures;
        if (failures <= 3) fprintf(stderr, "rpc_load: connect failed: %.*s\n",
                                   static_cast<int>(answer.size()), answer.data());
      }
      ++done;
      if (done >= cycles) return uv_stop(g_loop);
      start_cycle(slot);
    };
    all.push_back(std::move(client));
  }
  for (auto& c : all) c->open();
  uv_run(g_loop, UV_RUN_DEFAULT);
  const double elapsed = now_s() - begin;
  printf("cycles=%ld seconds=%.3f rate=%.0f failures=%ld\n", done, elapsed,
         static_cast<double>(done) / elapsed, failures);
  return done >= cycles ? 0 : 1;
}

int run_connect_many(long count, const std::string& prefix, int in_flight, int retry_ms) {
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<Client>> all;
  long next = 0, connected = 0, failed = 0, outstanding = 0;
  int64_t next_id = 1;
  double begin = 0;
  int ready = 0;
  const double give_up_at = now_s() + 600;
  // Which node each id asked for, so that a failure can be sent again.
  std::vector<long> node_of_id(static_cast<size_t>(count) * 4 + 16, -1);
  std::deque<std::pair<double, long>> again;  // (when, node index)
  auto* retry_timer = new uv_timer_t;
  uv_timer_init(g_loop, retry_timer);

  std::function<void()> pump;
  auto send_node = [&](long node) {
    Client* c = all[static_cast<size_t>(node % kClients)].get();
    const int64_t id = next_id++;
    if (static_cast<size_t>(id) >= node_of_id.size()) node_of_id.resize(node_of_id.size() * 2, -1);
    node_of_id[static_cast<size_t>(id)] = node;
    ++outstanding;
    c->send(line_for("connect", prefix + std::to_string(node), id));
  };
  pump = [&] {
    const double t = now_s();
    while (outstanding < in_flight && !again.empty() && again.front().first <= t) {
      const long node = again.front().second;
      again.pop_front();
      send_node(node);
    }
    while (outstanding < in_flight && next < count) send_node(next++);
    if (connected + failed >= count) uv_stop(g_loop);
    if (t > give_up_at) uv_stop(g_loop);
  };
  uv_timer_start(retry_timer, [](uv_timer_t* t) { (*static_cast<std::function<void()>*>(t->data))(); },
                 10, 10);
  retry_timer->data = &pump;
  for (int i = 0; i < kClients; ++i) {
    auto c = std::make_unique<Client>();
    c->on_connected = [&] {
      if (++ready < kClients) return;
      begin = now_s();
      pump();
    };
    c->on_line = [&](std::string_view answer) {
      --outstanding;
      const long id = id_of(answer);
      const long node = id >= 0 && static_cast<size_t>(id) < node_of_id.size()
                            ? node_of_id[static_cast<size_t>(id)] : -1;
      if (!is_error_answer(answer)) {
        ++connected;
      } else if (node >= 0 && now_s() - begin < 10.0) {
        again.emplace_back(now_s() + retry_ms / 1000.0, node);
      } else {
        ++failed;
        if (failed <= 3) fprintf(stderr, "rpc_load: connect failed: %.*s\n",
                                 static_cast<int>(answer.size()), answer.data());
      }
      pump();
    };
    all.push_back(std::move(c));
  }
  for (auto& c : all) c->open();
  uv_run(g_loop, UV_RUN_DEFAULT);
  const double elapsed = now_s() - begin;
  printf("connected=%ld failed=%ld seconds=%.3f rate=%.0f\n", connected, failed, elapsed,
         static_cast<double>(connected) / elapsed);
  return connected == count ? 0 : 1;
}

// One client, one request at a time, a pause between: the latency a user's
// `status` sees while the daemon is busy with something else.
struct Probe {
  Client client;
  uv_timer_t pause{};
  int interval_ms = 0;
  double sent_at = 0;
  long errors = 0;
  std::vector<double> latencies;
  std::vector<double> sent_times;

  void send() {
    sent_at = now_s();
    client.send(std::string(kStatusLine) + "\n");
  }
  void on_answer(std::string_view answer) {
    latencies.push_back((now_s() - sent_at) * 1e6);
    sent_times.push_back(sent_at);
    if (is_error_answer(answer)) ++errors;
    if (interval_ms <= 0) return send();
    uv_timer_start(&pause, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->send(); },
                   static_cast<uint64_t>(interval_ms), 0);
  }
};

int run_probe(double seconds, int interval_ms, const char* samples_file) {
  Probe probe;
  probe.interval_ms = interval_ms;
  uv_timer_init(g_loop, &probe.pause);
  probe.pause.data = &probe;
  probe.client.on_connected = [&] {
    stop_after(seconds);
    probe.send();
  };
  probe.client.on_line = [&](std::string_view answer) { probe.on_answer(answer); };
  probe.client.open();
  uv_run(g_loop, UV_RUN_DEFAULT);
  if (samples_file) {
    FILE* f = fopen(samples_file, "w");
    if (!f) {
      perror(samples_file);
      return 1;
    }
    for (size_t i = 0; i < probe.latencies.size(); ++i)
      fprintf(f, "%.6f %.1f\n", probe.sent_times[i], probe.latencies[i]);
    fclose(f);
  }
  std::vector<double> copy = probe.latencies;
  const double max = copy.empty() ? 0 : *std::max_element(copy.begin(), copy.end());
  printf("samples=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%ld\n", copy.size(),
         percentile(copy, 0.50), percentile(copy, 0.99), max, probe.errors);
  return copy.empty() ? 1 : 0;
}

int usage() {
  fprintf(stderr,
          "usage: rpc_load rate SOCK CLIENTS PIPELINE SECONDS [LINE]\n"
          "       rpc_load cycle SOCK SLOTS CYCLES PREFIX [CONNECTIONS]\n"
          "       rpc_load connect-many SOCK COUNT PREFIX IN_FLIGHT [RETRY_MS]\n"
          "       rpc_load probe SOCK SECONDS INTERVAL_MS [SAMPLES_FILE]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string mode = argv[1];
  g_socket = argv[2];
  g_loop = uv_default_loop();
  if (mode == "rate" && argc >= 6)
    return run_rate(atoi(argv[3]), atoi(argv[4]), atof(argv[5]), argc > 6 ? argv[6] : kStatusLine);
  if (mode == "cycle" && argc >= 6)
    return run_cycle(atoi(argv[3]), atol(argv[4]), argv[5], argc > 6 ? atoi(argv[6]) : 0);
  if (mode == "connect-many" && argc >= 6)
    return run_connect_many(atol(argv[3]), argv[4], atoi(argv[5]), argc > 6 ? atoi(argv[6]) : 50);
  if (mode == "probe" && argc >= 5)
    return run_probe(atof(argv[3]), atoi(argv[4]), argc > 5 ? argv[5] : nullptr);
  return usage();
}
