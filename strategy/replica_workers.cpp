// Persistent replica threads (see replica_workers.hpp).
#include "mirror/strategy/replica_workers.hpp"

#include "mirror/engine/error.hpp"

namespace mirror {

ReplicaWorkers::ReplicaWorkers(int count, std::function<void(int)> init, std::function<void()> on_failure)
    : init_(std::move(init)), on_failure_(std::move(on_failure)), errors_(static_cast<size_t>(count)) {
  threads_.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) threads_.emplace_back([this, i] { loop(i); });
}

ReplicaWorkers::~ReplicaWorkers() {
  stopping_.store(true);
  started_.advance();
  for (auto& t : threads_) t.join();
}

void ReplicaWorkers::loop(int index) {
  std::exception_ptr init_error;
  try {
    if (init_) init_(index);
  } catch (...) {
    init_error = std::current_exception();
  }
  uint64_t seen = 0;
  for (;;) {
    started_.wait(seen, [] { return false; }, Generation::Clock::time_point::max());
    seen = started_.current();
    if (stopping_.load()) return;
    std::exception_ptr error = init_error;
    if (!error) {
      try {
        (*job_)(index);
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error && on_failure_) on_failure_();
    errors_[static_cast<size_t>(index)] = error;
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) finished_.advance();
  }
}

void ReplicaWorkers::run(FunctionRef<void(int)> job) {
  for (auto& e : errors_) e = nullptr;
  job_ = &job;
  remaining_.store(count());
  const uint64_t finished = finished_.current();
  started_.advance();
  finished_.wait(finished, [] { return false; }, Generation::Clock::time_point::max());
  job_ = nullptr;

  std::exception_ptr first, root;
  for (auto& e : errors_) {
    if (!e) continue;
    if (!first) first = e;
    try {
      std::rethrow_exception(e);
    } catch (const CollectiveError&) {
    } catch (...) {
      if (!root) root = e;
    }
  }
  if (root) std::rethrow_exception(root);
  if (first) std::rethrow_exception(first);
}

}  // namespace mirror
