// The process-wide verbosity level (see verbosity.hpp).
#include "mirror/engine/verbosity.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace mirror {
namespace {

std::atomic<int>& level() {
  static std::atomic<int> value{[] {
    const char* text = std::getenv("MIRROR_VERBOSE");
    return text && *text ? std::atoi(text) : 1;
  }()};
  return value;
}

}  // namespace

int verbosity() { return level().load(std::memory_order_relaxed); }

void set_verbosity(int new_level) { level().store(new_level, std::memory_order_relaxed); }

void verbose_log(int min_level, std::string_view line) {
  if (verbosity() < min_level) return;
  static std::mutex mutex;
  std::string text(line);
  text += '\n';
  std::lock_guard lock(mutex);
  std::fwrite(text.data(), 1, text.size(), stderr);
}

}  // namespace mirror
