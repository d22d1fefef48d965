// In-process collectives over host memory (see host_communicator.hpp).
#include "mirror/collectives/host_communicator.hpp"

#include <algorithm>
#include <cstring>

#include "mirror/engine/error.hpp"

namespace mirror {

HostCommunicator::HostCommunicator(int size)
    : size_(size), buffers_(static_cast<size_t>(size)), counts_(static_cast<size_t>(size)),
      sequence_(static_cast<size_t>(size), 0) {
  MIRROR_REQUIRE(size >= 1, InvalidArgument, "a communicator needs at least one rank, got ", size);
}

void HostCommunicator::throw_aborted() {
  std::lock_guard lock(abort_mutex_);
  throw CollectiveError(abort_reason_);
}

void HostCommunicator::arrive_and_wait(int rank, const char* op, int64_t seq) {
  if (aborted_.load()) throw_aborted();
  // Read before arriving: the generation cannot advance until this rank has arrived.
  const uint64_t generation = generation_.current();
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.advance();
    return;
  }
  const bool met = generation_.wait(generation, [&] { return aborted_.load(); }, Generation::Clock::now() + timeout());
  if (met) return;
  if (aborted_.load()) throw_aborted();
  abort(str(op, " #", seq, " timed out after ", timeout().count(), " ms on rank ", rank, ": ", arrived_.load(), " of ",
            size_, " ranks arrived (a replica is stuck or issued collectives in another order)"));
  throw_aborted();
}

void HostCommunicator::check_same_count(const char* op, int64_t seq) {
  for (int k = 1; k < size_; ++k) {
    MIRROR_REQUIRE(counts_[static_cast<size_t>(k)] == counts_[0], CollectiveError, op, " #", seq, ": rank ", k,
                   " passed ", counts_[static_cast<size_t>(k)], " elements but rank 0 passed ", counts_[0]);
  }
}

void HostCommunicator::all_reduce_sum(int rank, std::span<float> data, const char* what) {
  if (size_ == 1) return;  // nothing to combine; never touch the memory (it may be a device's)
  const auto r = static_cast<size_t>(rank);
  const int64_t seq = sequence_[r]++;
  buffers_[r] = data.data();
  counts_[r] = data.size();
  arrive_and_wait(rank, what, seq);
  check_same_count(what, seq);

  const size_t count = data.size();
  const size_t chunk = (count + static_cast<size_t>(size_) - 1) / static_cast<size_t>(size_);
  const size_t begin = std::min(count, r * chunk), end = std::min(count, begin + chunk);
  // Accumulate into rank 0's slice one rank at a time, then copy it out: the same rank-order sum
  // ((b0 + b1) + b2) + ... as an element-by-element loop, but contiguous, so it vectorises.
  float* __restrict__ sum = buffers_[0] + begin;
  const size_t length = end - begin;
  for (int k = 1; k < size_; ++k) {
    const float* __restrict__ other = buffers_[static_cast<size_t>(k)] + begin;
    for (size_t i = 0; i < length; ++i) sum[i] += other[i];
  }
  for (int k = 1; k < size_; ++k)
    std::memcpy(buffers_[static_cast<size_t>(k)] + begin, sum, length * sizeof(float));
  // No rank may reuse its buffer before every slice has been written back.
  arrive_and_wait(rank, what, seq);
}

void HostCommunicator::broadcast(int rank, std::span<float> data, int root) {
  if (size_ == 1) return;
  const auto r = static_cast<size_t>(rank);
  const int64_t seq = sequence_[r]++;
  buffers_[r] = data.data();
  counts_[r] = data.size();
  arrive_and_wait(rank, "broadcast", seq);
  check_same_count("broadcast", seq);
  if (rank != root) std::memcpy(data.data(), buffers_[static_cast<size_t>(root)], data.size() * sizeof(float));
  arrive_and_wait(rank, "broadcast", seq);
}

void HostCommunicator::barrier(int rank) {
  if (size_ == 1) return;
  const int64_t seq = sequence_[static_cast<size_t>(rank)]++;
  arrive_and_wait(rank, "barrier", seq);
}

void HostCommunicator::abort(const std::string& reason) {
  {
    std::lock_guard lock(abort_mutex_);
    if (aborted_.load()) return;
    abort_reason_ = reason;
    aborted_.store(true);
  }
  generation_.wake_all();
}

}  // namespace mirror
