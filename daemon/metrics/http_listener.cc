#include "metrics/http_listener.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <optional>

namespace connmgr::metrics {

namespace {

constexpr std::string_view kMetricsPath = "/metrics";
// Connections waiting to be accepted while max_clients are being served.
constexpr int kListenBacklog = 64;

Error bad_address(std::string_view text) {
  return Error::invalid_params("metrics listen address '" + std::string(text) +
                               "': give an IP address and a port, as 127.0.0.1:9469 or [::1]:9469");
}

std::optional<uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// A listening socket of our own, handed to libmicrohttpd: MHD_start_daemon
// only says NULL when its bind fails, and the operator deserves the errno.
Result<int> open_listen_socket(const sockaddr_storage& address, std::string_view text) {
  const int family = address.ss_family;
  const int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::internal("metrics listener " + std::string(text) + ": socket: " + strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // [::]:port means IPv6 only: the listener binds exactly what it is given.
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const socklen_t length = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      listen(fd, kListenBacklog) != 0) {
    const int error = errno;
    close(fd);
    return Error::internal("cannot listen on " + std::string(text) + " (metrics_listen): " + strerror(error));
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage bound{};
  socklen_t length = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return 0;
  if (bound.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
}

MHD_Result respond(MHD_Connection* connection, unsigned status, std::string_view body,
                   std::string_view content_type, const char* allow = nullptr) {
  // MUST_COPY: the body is a temporary; libmicrohttpd keeps its own copy
  // until the connection has sent it.
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (!response) return MHD_NO;  // out of memory: libmicrohttpd closes the connection
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, std::string(content_type).c_str());
  if (allow) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

bool has_body(MHD_Connection* connection) {
  if (MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING)) return true;
  const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  return length && std::string_view(length) != "0";
}

}  // namespace

class HttpTrampolines {
 public:
  static MHD_Result on_request(void* self, MHD_Connection* connection, const char* url,
                               const char* method, const char* /*version*/,
                               const char* /*upload_data*/, size_t* /*upload_data_size*/,
                               void** request_state) {
    // libmicrohttpd calls once when the head has arrived, then again once
    // the body is read. An answer queued at the first call leaves the body
    // unread and so closes the connection: right for a request with a body
    // (refused unread), wrong for the others, answered at the second call
    // so that the connection may be kept alive.
    static char head_seen;
    if (*request_state == nullptr && !has_body(connection)) {
      *request_state = &head_seen;
      return MHD_YES;
    }
    return static_cast<MHD_Result>(static_cast<MetricsHttpListener*>(self)->answer(connection, url, method));
  }
  static void on_poll(uv_poll_t* handle, int /*status*/, int /*events*/) {
    // An error status (the descriptor in trouble) is left to MHD_run to see.
    if (auto* self = UvHandle<uv_poll_t>::owner<MetricsHttpListener>(handle)) self->run();
  }
};

Result<sockaddr_storage> parse_listen_address(std::string_view text) {
  sockaddr_storage address{};
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad_address(text);
  const std::optional<uint16_t> port = parse_port(text.substr(colon + 1));
  if (!port) return bad_address(text);
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    const std::string ip(host.substr(1, host.size() - 2));
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (inet_pton(AF_INET6, ip.c_str(), &in6->sin6_addr) != 1) return bad_address(text);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(*port);
    return address;
  }
  const std::string ip(host);
  auto* in4 = reinterpret_cast<sockaddr_in*>(&address);
  if (inet_pton(AF_INET, ip.c_str(), &in4->sin_addr) != 1) return bad_address(text);
  in4->sin_family = AF_INET;
  in4->sin_port = htons(*port);
  return address;
}

Result<std::unique_ptr<MetricsHttpListener>> MetricsHttpListener::start(
    uv_loop_t* loop, const HttpListenerOptions& options, Render render) {
  Result<sockaddr_storage> address = parse_listen_address(options.address);
  if (!address) return address.error();
  Result<int> fd = open_listen_socket(*address, options.address);
  if (!fd) return fd.error();

  std::unique_ptr<MetricsHttpListener> self(new MetricsHttpListener(std::move(render)));
  self->port_ = bound_port(*fd);
  // MHD_USE_EPOLL without MHD_USE_INTERNAL_POLLING_THREAD: no thread, the
  // loop polls libmicrohttpd's epoll descriptor. No MHD_USE_ERROR_LOG: it
  // would write to stderr; every failure a client meets is its answer.
  unsigned flags = MHD_USE_EPOLL;
  if (address->ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  self->daemon_ = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &HttpTrampolines::on_request, self.get(),
      MHD_OPTION_LISTEN_SOCKET, *fd,
      MHD_OPTION_CONNECTION_LIMIT, options.max_clients,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, options.max_request_bytes,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(options.timeout.count()),
      MHD_OPTION_END);
  if (!self->daemon_) {
    close(*fd);
    return Error::internal("metrics listener on " + options.address + ": libmicrohttpd did not start");
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(self->daemon_, MHD_DAEMON_INFO_EPOLL_FD);
  int rc = info ? self->poll_.init(loop, self.get(), uv_poll_init, info->epoll_fd) : UV_EINVAL;
  if (rc == 0) rc = uv_poll_start(self->poll_.get(), UV_READABLE, &HttpTrampolines::on_poll);
  if (rc == 0) rc = self->timer_.init(loop);
  if (rc != 0) return Error::internal("metrics listener on " + options.address + ": " + uv_strerror(rc));
  return self;
}

MetricsHttpListener::~MetricsHttpListener() {
  // The poll goes first: uv_close takes the epoll descriptor out of libuv's
  // own set at once, before MHD_stop_daemon closes it (and with it the
  // listening socket and every client connection).
  poll_.close();
  timer_.close();
  if (daemon_) MHD_stop_daemon(daemon_);
}

void MetricsHttpListener::run() {
  MHD_run(daemon_);
  // MHD_get_timeout says when MHD_run must run again even if epoll stays
  // quiet: 0 when data already read waits to be processed (its sockets are
  // edge-triggered and would not wake the poll again), else the nearest idle
  // connection's deadline. MHD_NO: nothing pending, the poll is enough.
  MHD_UNSIGNED_LONG_LONG timeout_ms = 0;
  if (MHD_get_timeout(daemon_, &timeout_ms) == MHD_YES) {
    timer_.start(timeout_ms, [this] { run(); });
  } else {
    timer_.stop();
  }
}

int MetricsHttpListener::answer(MHD_Connection* connection, std::string_view url, std::string_view method) {
  if (url != kMetricsPath) return respond(connection, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n", kTextContentType);
  if (method != MHD_HTTP_METHOD_GET && method != MHD_HTTP_METHOD_HEAD) {
    return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", kTextContentType, "GET, HEAD");
  }
  if (has_body(connection)) {
    return respond(connection, MHD_HTTP_CONTENT_TOO_LARGE, "a metrics request has no body\n", kTextContentType);
  }
  const char* accept = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
  const Format format = negotiate(accept ? accept : "");
  std::string body;
  try {
    body = render_(format);
  } catch (const std::exception& e) {  // never unwind through libmicrohttpd's C frames
    return respond(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, std::string(e.what()) + "\n", kTextContentType);
  }
  return respond(connection, MHD_HTTP_OK, body, content_type(format));
}

}  // namespace connmgr::metrics
