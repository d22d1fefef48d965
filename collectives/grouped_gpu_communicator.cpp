// Collectives among GPU replicas of which several may share a GPU (see the header for ordering).
#include "mirror/collectives/grouped_gpu_communicator.hpp"

#include <algorithm>

#include "mirror/collectives/local_reduce.cuh"
#include "mirror/engine/cuda/cuda_backend.hpp"
#include "mirror/engine/cuda/cuda_check.hpp"
#include "mirror/engine/cuda/cuda_handles.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {

GroupedGpuCommunicator::GroupedGpuCommunicator(std::span<Backend* const> backends)
    : host_(static_cast<int>(backends.size())) {
  MIRROR_REQUIRE(!backends.empty(), InvalidArgument, "a GPU communicator needs at least one replica");
  std::vector<Backend*> leaders;
  for (size_t r = 0; r < backends.size(); ++r) {
    MIRROR_REQUIRE(backends[r]->device().kind == DeviceKind::GPU, InvalidArgument, "replica ", r, " is not on a GPU");
    Rank rank;
    rank.device = backends[r]->device().index;
    if (r == 0 || rank.device != ranks_.back().device) {
      for (const Rank& earlier : ranks_)
        MIRROR_REQUIRE(earlier.device != rank.device, InvalidArgument, "replicas on GPU ", rank.device,
                       " must be adjacent (replica ", r, " is separated from the others)");
      groups_.emplace_back();
      leaders.push_back(backends[r]);
    }
    rank.group = static_cast<int>(groups_.size()) - 1;
    rank.local = static_cast<int>(groups_.back().size());
    MIRROR_REQUIRE(rank.local < cuda::kMaxLocalReplicas, InvalidArgument, "at most ", cuda::kMaxLocalReplicas,
                   " replicas can share one GPU");
    rank.stream = cuda::stream_of(*backends[r]);
    cuda::DeviceGuard guard(rank.device);
    rank.ready = cuda::Event::create();
    rank.done = cuda::Event::create();
    groups_.back().push_back(static_cast<int>(r));
    ranks_.push_back(std::move(rank));
  }
  if (groups_.size() > 1) nccl_ = std::make_unique<NcclCommunicator>(leaders);
}

GroupedGpuCommunicator::~GroupedGpuCommunicator() {
  for (Rank& rank : ranks_) {
    cudaSetDevice(rank.device);
    rank.ready.reset();  // with the rank's device current
    rank.done.reset();
  }
}

void GroupedGpuCommunicator::wait_for_group(int rank, cuda::Event Rank::*which) {
  Rank& me = ranks_[static_cast<size_t>(rank)];
  for (int peer : group_of(rank)) MIRROR_CUDA_CHECK(cudaStreamWaitEvent(me.stream, (ranks_[static_cast<size_t>(peer)].*which).get(), 0));
}

void GroupedGpuCommunicator::all_reduce_sum(int rank, std::span<float> data, const char* what) {
  Rank& me = ranks_[static_cast<size_t>(rank)];
  me.data = data.data();
  MIRROR_CUDA_CHECK(cudaEventRecord(me.ready.get(), me.stream));
  host_.barrier(rank);  // every replica's pointer is published and its `ready` recorded

  // Replica `local` of a GPU sums slice `local` of all that GPU's buffers into each of them.
  const std::vector<int>& group = group_of(rank);
  wait_for_group(rank, &Rank::ready);
  cuda::LocalBuffers buffers{};
  buffers.count = static_cast<int>(group.size());
  for (size_t j = 0; j < group.size(); ++j) buffers.data[j] = ranks_[static_cast<size_t>(group[j])].data;
  const size_t n = data.size(), chunk = (n + group.size() - 1) / group.size();
  const size_t begin = std::min(n, static_cast<size_t>(me.local) * chunk), end = std::min(n, begin + chunk);
  cuda::launch_sum_into_all(buffers, begin, end, me.stream);
  MIRROR_CUDA_CHECK(cudaEventRecord(me.done.get(), me.stream));
  host_.barrier(rank);  // every slice is queued
  wait_for_group(rank, &Rank::done);

  if (nccl_) {
    if (me.local == 0) nccl_->all_reduce_sum(me.group, data, what);
    copy_from_leader(rank, data);
  }
}

void GroupedGpuCommunicator::broadcast(int rank, std::span<float> data, int root) {
  MIRROR_REQUIRE(root >= 0 && root < size() && ranks_[static_cast<size_t>(root)].local == 0, InvalidArgument,
                 "broadcast root ", root, " must be the first replica of its GPU");
  Rank& me = ranks_[static_cast<size_t>(rank)];
  me.data = data.data();
  if (nccl_ && me.local == 0) nccl_->broadcast(me.group, data, ranks_[static_cast<size_t>(root)].group);
  copy_from_leader(rank, data);
}

void GroupedGpuCommunicator::copy_from_leader(int rank, std::span<float> data) {
  Rank& me = ranks_[static_cast<size_t>(rank)];
  if (me.local == 0) MIRROR_CUDA_CHECK(cudaEventRecord(me.done.get(), me.stream));
  host_.barrier(rank);  // the leaders' results are queued and their `done` recorded
  if (me.local != 0) {
    const Rank& leader = ranks_[static_cast<size_t>(group_of(rank).front())];
    MIRROR_CUDA_CHECK(cudaStreamWaitEvent(me.stream, leader.done.get(), 0));
    MIRROR_CUDA_CHECK(cudaMemcpyAsync(data.data(), leader.data, data.size_bytes(), cudaMemcpyDeviceToDevice, me.stream));
    MIRROR_CUDA_CHECK(cudaEventRecord(me.done.get(), me.stream));
  }
  host_.barrier(rank);  // every copy is queued
  // The leader must not write its buffer again before the others have read it.
  if (me.local == 0) wait_for_group(rank, &Rank::done);
}

void GroupedGpuCommunicator::abort(const std::string& reason) {
  host_.abort(reason);
  if (nccl_) nccl_->abort(reason);
}

}  // namespace mirror
