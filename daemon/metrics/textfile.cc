#include "metrics/textfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

namespace connmgr::metrics {

// A uv_work_t must live until its after-work callback, which may come after
// the MetricsTextfile is gone: the block owns the request and copies of all
// the pool thread reads, and frees itself in after_write.
struct MetricsTextfile::Write {
  uv_work_t request{};
  MetricsTextfile* owner = nullptr;  // null once the owner is gone
  std::string path;
  std::string temp_path;
  std::string text;
  // The outcome: the step that failed (null: none) and its errno.
  const char* step = nullptr;
  int error = 0;
};

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

// The temporary file written, synced and renamed over the path; on failure
// the step and errno, and no temporary file left.
void replace_file(const std::string& path, const std::string& temp_path, const std::string& text,
                  const char*& step, int& error) {
  const int fd = open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    step = "create";
    error = errno;
    return;
  }
  // 0644 whatever the daemon's umask: node_exporter runs as another user.
  if (fchmod(fd, 0644) != 0) {
    step = "chmod";
  } else if (!write_all(fd, text)) {
    step = "write";
  } else if (fsync(fd) != 0) {  // the data on disk before the rename makes it visible
    step = "fsync";
  }
  if (step) error = errno;
  if (close(fd) != 0 && !step) {
    step = "close";  // NFS and a full disk may say so only here
    error = errno;
  }
  if (!step && rename(temp_path.c_str(), path.c_str()) != 0) {
    step = "rename";
    error = errno;
  }
  if (step) unlink(temp_path.c_str());
}

}  // namespace

MetricsTextfile::MetricsTextfile(uv_loop_t* loop, std::string path, std::chrono::milliseconds interval,
                                 Render render, OnError on_error)
    : loop_(loop),
      path_(std::move(path)),
      temp_path_(temp_path_for(path_)),
      interval_(interval),
      render_(std::move(render)),
      on_error_(std::move(on_error)),
      timer_(loop) {}

MetricsTextfile::~MetricsTextfile() {
  if (!write_) return;
  write_->owner = nullptr;
  // Fails once a pool thread runs it: the write then completes unreported.
  uv_cancel(reinterpret_cast<uv_req_t*>(&write_->request));
}

void MetricsTextfile::start() {
  write_now();
  const auto every = static_cast<uint64_t>(interval_.count());
  timer_.start(every, [this] { write_now(); }, every);
}

void MetricsTextfile::stop() {
  timer_.stop();
  again_ = false;
}

void MetricsTextfile::write_now() {
  if (write_) {
    again_ = true;  // the same temporary file: one write at a time
    return;
  }
  auto write = std::make_unique<Write>();
  write->owner = this;
  write->path = path_;
  write->temp_path = temp_path_;
  write->text = render_();
  write->request.data = write.get();
  const int rc = uv_queue_work(loop_, &write->request, &MetricsTextfile::write_file, &MetricsTextfile::after_write);
  if (rc != 0) {
    fail("queue:" + std::to_string(rc), "cannot write the metrics textfile " + path_ + ": " + uv_strerror(rc));
    return;
  }
  write_ = write.release();
}

void MetricsTextfile::write_file(uv_work_t* request) {
  auto* write = static_cast<Write*>(request->data);
  replace_file(write->path, write->temp_path, write->text, write->step, write->error);
}

void MetricsTextfile::after_write(uv_work_t* request, int status) {
  std::unique_ptr<Write> write(static_cast<Write*>(request->data));
  MetricsTextfile* self = write->owner;
  if (!self) return;
  self->write_ = nullptr;
  if (status != UV_ECANCELED) self->on_written(*write);
}

void MetricsTextfile::on_written(const Write& write) {
  if (write.step) {
    fail(std::string(write.step) + ":" + std::to_string(write.error),
         "cannot write the metrics textfile " + path_ + " (" + write.step + "): " + strerror(write.error));
  } else {
    reported_.clear();
    ++writes_;
  }
  if (std::exchange(again_, false)) write_now();
}

void MetricsTextfile::fail(const std::string& kind, const std::string& message) {
  if (!reported_.insert(kind).second) return;
  if (on_error_) on_error_(message);
}

}  // namespace connmgr::metrics
