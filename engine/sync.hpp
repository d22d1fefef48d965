// Generation: a counter that threads wait on to change, spinning briefly before they block. The
// replicas of a step meet several times per step (the step's start and end, every collective);
// waking a thread through the kernel costs tens of microseconds in a virtual machine, more than a
// short spin, and a blocked thread may wait a whole time slice to run again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIRROR_CPU_RELAX() _mm_pause()
#else
#define MIRROR_CPU_RELAX() std::this_thread::yield()
#endif

namespace mirror {

class Generation {
 public:
  using Clock = std::chrono::steady_clock;

  uint64_t current() const { return value_.load(std::memory_order_acquire); }

  // Moves to the next generation and wakes every waiter. Writes made before it are visible to a
  // waiter that sees the new generation.
  void advance() {
    {
      std::lock_guard lock(mutex_);
      value_.fetch_add(1, std::memory_order_acq_rel);
    }
    changed_.notify_all();
  }

  // Wakes waiters so that they re-check `stop` (e.g. after an abort).
  void wake_all() {
    { std::lock_guard lock(mutex_); }
    changed_.notify_all();
  }

  // Waits until the generation is no longer `seen` (true) or `stop()` holds or `deadline` passes
  // (false). Spins for `spin` first: busy at first, then yielding the core to other threads.
  template <typename Stop>
  bool wait(uint64_t seen, Stop stop, Clock::time_point deadline,
            std::chrono::microseconds spin = std::chrono::microseconds(200)) {
    const auto spin_end = Clock::now() + spin;
    for (int i = 0; Clock::now() < spin_end; ++i) {
      if (current() != seen) return true;
      if (stop()) return false;
      if (i < 64) {
        MIRROR_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, deadline, [&] { return current() != seen || stop(); }) && current() != seen;
  }

 private:
  std::atomic<uint64_t> value_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
};

}  // namespace mirror
