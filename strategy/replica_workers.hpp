// ReplicaWorkers: one persistent thread per replica. A step hands every thread the same job and
// waits for all of them; no step ever creates a thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "mirror/engine/function_ref.hpp"
#include "mirror/engine/sync.hpp"

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
  // Allocates nothing: `job` is called by reference.
  void run(FunctionRef<void(int)> job);

 private:
  void loop(int index);

  std::function<void(int)> init_;
  std::function<void()> on_failure_;
  const FunctionRef<void(int)>* job_ = nullptr;  // published by started_.advance()
  Generation started_;                // advanced when a job (or the stop) is posted
  Generation finished_;               // advanced by the last thread to finish a job
  std::atomic<int> remaining_{0};
  std::atomic<bool> stopping_{false};
  std::vector<std::exception_ptr> errors_;  // one slot per thread, written by that thread
  std::vector<std::thread> threads_;
};

}  // namespace mirror
