// Persistent replica threads (see replica_workers.hpp).
#include "strategy/replica_workers.hpp"

#include "engine/error.hpp"

namespace mirror {

ReplicaWorkers::ReplicaWorkers(int count, std::function<void(int)> init, std::function<void()> on_failure)
    : init_(std::move(init)), on_failure_(std::move(on_failure)), errors_(static_cast<size_t>(count)) {
  threads_.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) threads_.emplace_back([this, i] { loop(i); });
}

ReplicaWorkers::~ReplicaWorkers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
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
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr error = init_error;
    if (!error) {
      try {
        (*job)(index);
      } catch (...) {
        error = std::current_exception();
      }
    }
    if (error && on_failure_) on_failure_();
    std::lock_guard lock(mutex_);
    errors_[static_cast<size_t>(index)] = error;
    if (--remaining_ == 0) work_done_.notify_all();
  }
}

void ReplicaWorkers::run(const std::function<void(int)>& job) {
  {
    std::unique_lock lock(mutex_);
    job_ = &job;
    remaining_ = count();
    for (auto& e : errors_) e = nullptr;
    ++generation_;
    work_ready_.notify_all();
    work_done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }
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
