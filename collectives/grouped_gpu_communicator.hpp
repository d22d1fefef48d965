// GroupedGpuCommunicator: collectives among GPU replicas where several (logical) replicas share a
// GPU. NCCL refuses two ranks on one device, so replicas on the same GPU are combined by a kernel
// (each replica sums one slice of every buffer of its GPU, in replica order), and the first
// replica of each GPU joins an NCCL all-reduce across GPUs; the others then copy its result.
//
// Who waits for what: everything is queued on the replicas' own streams and ordered between them
// with events; the host threads meet at barriers (with the communicator's timeout) only to
// exchange pointers and to make sure every event they wait for has been recorded. On return, the
// caller's stream is ordered after the collective and every peer's use of the caller's buffer.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <span>
#include <vector>

#include "mirror/collectives/host_communicator.hpp"
#include "mirror/collectives/nccl_communicator.hpp"
#include "mirror/engine/backend.hpp"

namespace mirror {

class GroupedGpuCommunicator final : public Communicator {
 public:
  // backends[r] is replica r's CUDA backend; replicas on one GPU must be adjacent.
  explicit GroupedGpuCommunicator(std::span<Backend* const> backends);
  ~GroupedGpuCommunicator() override;
  GroupedGpuCommunicator(const GroupedGpuCommunicator&) = delete;
  GroupedGpuCommunicator& operator=(const GroupedGpuCommunicator&) = delete;

  int size() const override { return static_cast<int>(ranks_.size()); }
  void all_reduce_sum(int rank, std::span<float> data, const char* what = "all_reduce") override;
  // `root` must be the first replica of its GPU (replica 0 always is).
  void broadcast(int rank, std::span<float> data, int root = 0) override;
  void barrier(int rank) override { host_.barrier(rank); }
  void abort(const std::string& reason) override;

 private:
  struct Rank {
    int device = 0;
    int group = 0;        // index of its GPU among the communicator's GPUs
    int local = 0;        // index among the replicas of its GPU
    cudaStream_t stream = nullptr;
    cuda::Event ready, done;  // owned: a throw in the constructor leaks none
    float* data = nullptr;  // published for the current collective
  };

  const std::vector<int>& group_of(int rank) const { return groups_[static_cast<size_t>(ranks_[static_cast<size_t>(rank)].group)]; }
  // The stream of `rank` waits for event `which` of every replica of its GPU.
  void wait_for_group(int rank, cuda::Event Rank::*which);
  // Non-leaders copy their leader's buffer; leaders wait until those copies are done.
  void copy_from_leader(int rank, std::span<float> data);

  std::vector<Rank> ranks_;
  std::vector<std::vector<int>> groups_;   // ranks of each GPU
  HostCommunicator host_;                  // barriers among the host threads
  std::unique_ptr<NcclCommunicator> nccl_; // among the first replicas of each GPU; null with one GPU
};

}  // namespace mirror
