#include "metrics/textfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace connmgr::metrics {

namespace {

std::string temp_path_for(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  // A leading dot: node_exporter reads only *.prom files, and the dot keeps
  // the temporary file out of a glob's way too.
  return dir + "." + name + "." + std::to_string(getpid()) + ".tmp";
}

bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

MetricsTextfile::MetricsTextfile(uv_loop_t* loop, std::string path, std::chrono::milliseconds interval,
                                 Render render, OnError on_error)
    : path_(std::move(path)),
      temp_path_(temp_path_for(path_)),
      interval_(interval),
      render_(std::move(render)),
      on_error_(std::move(on_error)),
      timer_(loop) {}

void MetricsTextfile::start() {
  write_now();
  const auto every = static_cast<uint64_t>(interval_.count());
  timer_.start(every, [this] { write_now(); }, every);
}

void MetricsTextfile::stop() { timer_.stop(); }

bool MetricsTextfile::write_now() {
  const std::string text = render_();
  const int fd = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    fail("create:" + std::to_string(errno), "cannot create " + temp_path_ + ": " + strerror(errno));
    return false;
  }
  // 0644 whatever the daemon's umask: node_exporter runs as another user.
  const char* step = nullptr;
  int failure = 0;
  if (fchmod(fd, 0644) != 0) {
    step = "chmod";
  } else if (!write_all(fd, text)) {
    step = "write";
  } else if (fsync(fd) != 0) {  // the data on disk before the rename makes it visible
    step = "fsync";
  }
  if (step) failure = errno;
  if (close(fd) != 0 && !step) {
    step = "close";  // NFS and a full disk may say so only here
    failure = errno;
  }
  if (!step && rename(temp_path_.c_str(), path_.c_str()) != 0) {
    step = "rename";
    failure = errno;
  }
  if (step) {
    unlink(temp_path_.c_str());
    fail(std::string(step) + ":" + std::to_string(failure),
         "cannot write the metrics textfile " + path_ + " (" + step + "): " + strerror(failure));
    return false;
  }
  reported_.clear();
  return true;
}

void MetricsTextfile::fail(const std::string& kind, const std::string& message) {
  if (!reported_.insert(kind).second) return;
  if (on_error_) on_error_(message);
}

}  // namespace connmgr::metrics
