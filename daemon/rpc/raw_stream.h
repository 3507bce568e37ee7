// RawStream: the far side of a raw byte pipe (streams.open) as the session's
// splice drives it. The RPC layer knows no transport: daemon/methods adapts
// lib/net's Stream (net/stream.h) to this interface, whose rules are that
// header's: write()/buffered()/on_writable toward the node, on_data and
// consume(n) from it, shutdown_write() and on_eof for the ends of each
// direction, on_end(reason) final, reset() aborts and fires nothing, and no
// callback fires from inside a call on the stream. Loop thread only.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace connmgr::rpc {

class RawStream {
 public:
  struct Callbacks {
    std::function<void(std::string_view bytes)> on_data;
    std::function<void()> on_eof;
    std::function<void()> on_writable;
    std::function<void(const std::string& reason)> on_end;
  };

  virtual ~RawStream() = default;
  virtual void start(Callbacks callbacks) = 0;
  virtual void write(std::string_view bytes) = 0;
  virtual size_t buffered() const = 0;
  virtual void shutdown_write() = 0;
  virtual void consume(size_t n) = 0;
  virtual void reset() = 0;
};

}  // namespace connmgr::rpc
