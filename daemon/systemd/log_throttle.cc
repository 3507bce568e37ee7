#include "systemd/log_throttle.h"

#include <algorithm>

namespace connmgr::daemon {

namespace {
constexpr int64_t kReportIntervalMs = 1000;
}  // namespace

LineLimiter::LineLimiter(double rate_per_s, double burst)
    : rate_per_ms_(rate_per_s / 1000.0), burst_(burst), tokens_(burst) {}

void LineLimiter::refill(int64_t now_ms) {
  if (last_refill_ms_ >= 0 && now_ms > last_refill_ms_)
    tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_ms - last_refill_ms_) * rate_per_ms_);
  if (now_ms > last_refill_ms_) last_refill_ms_ = now_ms;
}

bool LineLimiter::admit(int64_t now_ms) {
  refill(now_ms);
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  ++suppressed_;
  return false;
}

uint64_t LineLimiter::take_report(int64_t now_ms) {
  if (suppressed_ == 0 || now_ms - last_report_ms_ < kReportIntervalMs) return 0;
  last_report_ms_ = now_ms;
  return std::exchange(suppressed_, 0);
}

bool FailureSummary::on_failure(const std::string& node, std::string_view reason) {
  auto [it, created] = series_.try_emplace(node);
  Series& s = it->second;
  s.failed_in_period = true;
  if (created) return true;
  if (!s.open) {
    s.open = true;
    return true;
  }
  ++s.repeats;
  auto r = std::find_if(s.reasons.begin(), s.reasons.end(), [&](const auto& p) { return p.first == reason; });
  if (r == s.reasons.end()) s.reasons.emplace_back(std::string(reason), 1);
  else ++r->second;
  return false;
}

void FailureSummary::end_series(const std::string& node) {
  auto it = series_.find(node);
  if (it == series_.end()) return;
  if (it->second.repeats == 0) series_.erase(it);
  else it->second.open = false;
}

void FailureSummary::flush(const std::function<void(const Repeats&)>& emit) {
  for (auto it = series_.begin(); it != series_.end();) {
    Series& s = it->second;
    if (s.repeats > 0) {
      std::string reasons;
      for (const auto& [why, n] : s.reasons)
        reasons += (reasons.empty() ? "" : ",") + why + ":" + std::to_string(n);
      emit(Repeats{it->first, s.repeats, std::move(reasons)});
    }
    if (!s.failed_in_period || !s.open) {
      it = series_.erase(it);
      continue;
    }
    s.failed_in_period = false;
    s.repeats = 0;
    std::vector<std::pair<std::string, uint64_t>>().swap(s.reasons);
    ++it;
  }
}

}  // namespace connmgr::daemon
