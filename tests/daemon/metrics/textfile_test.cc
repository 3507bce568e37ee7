#include "metrics/textfile.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "test_support.h"

using namespace connmgr;
using namespace connmgr::metrics;
using namespace std::chrono_literals;

namespace {

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    test::drain_loop(&loop);
    uv_loop_close(&loop);
  }
  uv_loop_t* get() { return &loop; }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(d);
  }
  return names;
}

// A body of about `size` bytes, every line saying `tag`.
std::string body_of(char tag, size_t size) {
  std::string text;
  while (text.size() < size) text += std::string("connmgr_sample{tag=\"") + tag + "\"} 1\n";
  return text;
}

// One write, the loop run until it is done; true when it replaced the file.
bool write_and_wait(uv_loop_t* loop, MetricsTextfile& file) {
  const uint64_t before = file.writes();
  file.write_now();
  test::run_until(loop, [&] { return !file.writing(); }, 10s);
  return file.writes() == before + 1;
}

}  // namespace

TEST_CASE("the textfile is exactly what render returned, mode 0644 whatever the umask", "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  const std::string path = dir.file("connmgr.prom");
  const mode_t old_umask = umask(077);
  MetricsTextfile file(loop.get(), path, 1s, [] { return std::string("# TYPE a gauge\na 1\n"); }, nullptr);
  const bool written = write_and_wait(loop.get(), file);
  umask(old_umask);
  REQUIRE(written);
  CHECK(read_file(path) == "# TYPE a gauge\na 1\n");
  struct stat st{};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  CHECK(entries(dir.path()) == std::vector<std::string>{"connmgr.prom"});
}

TEST_CASE("start writes at once and then every interval; stop ends it", "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  int renders = 0;
  MetricsTextfile file(loop.get(), dir.file("m.prom"), 20ms, [&] {
    ++renders;
    return "a " + std::to_string(renders) + "\n";
  }, nullptr);
  file.start();
  CHECK(renders == 1);
  CHECK(test::run_until(loop.get(), [&] { return file.writes() == 1; }, 5s));
  CHECK(read_file(dir.file("m.prom")) == "a 1\n");
  CHECK(test::run_until(loop.get(), [&] { return renders >= 4; }, 5s));
  file.stop();
  const int stopped_at = renders;
  test::run_for(loop.get(), 100ms);
  CHECK_FALSE(file.writing());
  CHECK(renders == stopped_at);
  CHECK(read_file(dir.file("m.prom")) == "a " + std::to_string(stopped_at) + "\n");
}

TEST_CASE("a reader never sees a partial textfile while it is rewritten", "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  const std::string path = dir.file("connmgr.prom");
  const std::string a = body_of('a', 40 * 1024), b = body_of('b', 24 * 1024);
  int n = 0;
  MetricsTextfile file(loop.get(), path, 1s, [&] { return n++ % 2 == 0 ? a : b; }, nullptr);
  REQUIRE(write_and_wait(loop.get(), file));
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, torn{0};
  std::thread reader([&] {
    while (!done) {
      const std::string seen = read_file(path);
      if (seen != a && seen != b) ++torn;
      ++reads;
    }
  });
  for (int i = 0; i < 200; ++i) REQUIRE(write_and_wait(loop.get(), file));
  done = true;
  reader.join();
  CHECK(torn == 0);
  CHECK(reads > 0);
  CHECK(entries(dir.path()) == std::vector<std::string>{"connmgr.prom"});
}

TEST_CASE("failures are reported once per kind until a write succeeds, with no temporary file left",
          "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  std::vector<std::string> errors;
  auto on_error = [&](const std::string& e) { errors.push_back(e); };
  auto render = [] { return std::string("a 1\n"); };

  SECTION("a missing directory") {
    MetricsTextfile file(loop.get(), dir.file("gone/connmgr.prom"), 1s, render, on_error);
    for (int i = 0; i < 3; ++i) CHECK_FALSE(write_and_wait(loop.get(), file));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].find(dir.file("gone")) != std::string::npos);
    CHECK(errors[0].find("No such file or directory") != std::string::npos);
    // The directory appears: written, and the next failure is said again.
    REQUIRE(mkdir(dir.file("gone").c_str(), 0755) == 0);
    CHECK(write_and_wait(loop.get(), file));
    REQUIRE(unlink(dir.file("gone/connmgr.prom").c_str()) == 0);
    REQUIRE(rmdir(dir.file("gone").c_str()) == 0);
    CHECK_FALSE(write_and_wait(loop.get(), file));
    CHECK(errors.size() == 2);
  }
  SECTION("a rename that fails (the path is a directory) removes the temporary file") {
    REQUIRE(mkdir(dir.file("connmgr.prom").c_str(), 0755) == 0);
    MetricsTextfile file(loop.get(), dir.file("connmgr.prom"), 1s, render, on_error);
    for (int i = 0; i < 3; ++i) CHECK_FALSE(write_and_wait(loop.get(), file));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].find("rename") != std::string::npos);
    CHECK(entries(dir.path()) == std::vector<std::string>{"connmgr.prom"});
  }
  SECTION("a full disk (the temporary file's place taken by /dev/full)") {
    // Writing into /dev/full fails with ENOSPC, as a full file system would.
    const std::string temp = dir.file(".connmgr.prom." + std::to_string(getpid()) + ".tmp");
    if (mknod(temp.c_str(), S_IFCHR | 0666, makedev(1, 7)) != 0) {
      WARN("skipped: cannot make a /dev/full node here: " << strerror(errno));
      return;
    }
    MetricsTextfile file(loop.get(), dir.file("connmgr.prom"), 1s, render, on_error);
    CHECK_FALSE(write_and_wait(loop.get(), file));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].find("No space left on device") != std::string::npos);
    CHECK(entries(dir.path()).empty());
  }
}

TEST_CASE("bench: a 40 KiB textfile write, fsync included", "[metrics][textfile][.bench]") {
  Loop loop;
  const std::string body = body_of('a', 40 * 1024);
  for (const std::string& root : {std::string("/tmp"), test::TempDir::test_root()}) {
    test::TempDir dir(root);
    MetricsTextfile file(loop.get(), dir.file("connmgr.prom"), 1s, [&] { return body; }, nullptr);
    constexpr int kWrites = 50;
    const auto start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration on_loop{};
    for (int i = 0; i < kWrites; ++i) {
      const auto asked = std::chrono::steady_clock::now();
      file.write_now();
      on_loop += std::chrono::steady_clock::now() - asked;
      REQUIRE(test::run_until(loop.get(), [&] { return !file.writing(); }, 10s));
    }
    REQUIRE(file.writes() == kWrites);
    const auto each = (std::chrono::steady_clock::now() - start) / kWrites;
    std::printf("textfile write in %s: %.3f ms each, of which %.3f ms on the loop\n", root.c_str(),
                std::chrono::duration<double, std::milli>(each).count(),
                std::chrono::duration<double, std::milli>(on_loop / kWrites).count());
  }
}

TEST_CASE("a write asked for during another follows it, once, with the latest text", "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  int renders = 0;
  MetricsTextfile file(loop.get(), dir.file("m.prom"), 1s, [&] { return "a " + std::to_string(++renders) + "\n"; },
                       nullptr);
  file.write_now();
  file.write_now();
  file.write_now();
  CHECK(renders == 1);  // the others wait for the first
  CHECK(test::run_until(loop.get(), [&] { return file.writes() == 2 && !file.writing(); }, 10s));
  test::run_for(loop.get(), 50ms);
  CHECK(file.writes() == 2);
  CHECK(renders == 2);
  CHECK(read_file(dir.file("m.prom")) == "a 2\n");
}

TEST_CASE("destroying the textfile with a write under way is safe and reports nothing", "[metrics][textfile]") {
  Loop loop;
  test::TempDir dir;
  int errors = 0;
  {
    MetricsTextfile file(loop.get(), dir.file("gone/m.prom"), 1s, [] { return std::string("a 1\n"); },
                         [&](const std::string&) { ++errors; });
    file.start();
    REQUIRE(file.writing());
  }
  // The loop runs until the write is over (its request keeps it alive);
  // the write's block frees itself then (LeakSanitizer would say otherwise).
  uv_run(loop.get(), UV_RUN_DEFAULT);
  CHECK(errors == 0);
}
