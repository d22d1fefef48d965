// HostCommunicator: collectives among replicas that are threads of this process and keep their
// buffers in host memory. Deterministic: a sum is always taken in rank order, so every rank ends
// with bitwise-identical values whatever the thread timing.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/sync.hpp"

namespace mirror {

class HostCommunicator final : public Communicator {
 public:
  explicit HostCommunicator(int size);

  int size() const override { return size_; }
  // Reduce-scatter then all-gather in place: rank r sums slice r of every rank's buffer (in rank
  // order) and writes the sum back into every buffer, so all ranks work in parallel.
  void all_reduce_sum(int rank, std::span<float> data, const char* what = "all_reduce") override;
  void broadcast(int rank, std::span<float> data, int root = 0) override;
  void barrier(int rank) override;
  void abort(const std::string& reason) override;

 private:
  // Waits until all ranks reach this point; `op` and `seq` name the collective in errors.
  void arrive_and_wait(int rank, const char* op, int64_t seq);
  void check_same_count(const char* op, int64_t seq);
  [[noreturn]] void throw_aborted();

  const int size_;
  std::atomic<int> arrived_{0};      // ranks at the current meeting point
  Generation generation_;            // advanced by the last rank to arrive
  std::atomic<bool> aborted_{false};
  std::mutex abort_mutex_;
  std::string abort_reason_;         // guarded by abort_mutex_; set once
  std::vector<float*> buffers_;        // per rank, published for the current collective
  std::vector<size_t> counts_;         // per rank
  std::vector<int64_t> sequence_;      // per rank: collectives issued so far
};

}  // namespace mirror
