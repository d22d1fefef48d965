// ReplicaWorkers: one persistent thread per replica. A step hands every thread the same job and
// waits for all of them; no step ever creates a thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mirror {

class ReplicaWorkers {
 public:
  // `init(i)` runs once on thread i before any job (binds the thread to its device).
  // `on_failure()` runs when a job throws on any thread, so that threads blocked in a collective
  // with the failing one are released (the strategy aborts its communicator).
  ReplicaWorkers(int count, std::function<void(int)> init, std::function<void()> on_failure);
  ~ReplicaWorkers();
  ReplicaWorkers(const ReplicaWorkers&) = delete;
  ReplicaWorkers& operator=(const ReplicaWorkers&) = delete;

  int count() const { return static_cast<int>(threads_.size()); }

  // Runs job(i) on thread i for every i and waits for all. If any threw, rethrows the root cause:
  // the first exception that is not a CollectiveError caused by the abort, else the first one.
  void run(const std::function<void(int)>& job);

 private:
  void loop(int index);

  std::function<void(int)> init_;
  std::function<void()> on_failure_;
  std::mutex mutex_;
  std::condition_variable work_ready_, work_done_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int remaining_ = 0;
  bool stopping_ = false;
  std::vector<std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace mirror
