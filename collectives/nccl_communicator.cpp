// NcclCommunicator: NCCL collectives on each rank's backend stream, with a host-side deadline
// (see nccl_communicator.hpp for who waits for what).
#include "collectives/nccl_communicator.hpp"

#include <chrono>
#include <thread>
#include <utility>

#include "engine/cuda/cuda_backend.hpp"
#include "engine/cuda/cuda_handles.hpp"
#include "engine/cuda/nccl_check.hpp"
#include "engine/error.hpp"

namespace mirror {
namespace {

using Clock = std::chrono::steady_clock;

// Spin (yielding) this long before sleeping between polls: most collectives finish sooner.
constexpr auto kSpinTime = std::chrono::microseconds(200);
constexpr auto kPollInterval = std::chrono::microseconds(50);

}  // namespace

ncclResult_t NcclCommunicator::async_error(Rank& rank) {
  std::lock_guard lock(rank.mutex);
  ncclResult_t async = ncclSuccess;
  if (rank.comm && ncclCommGetAsyncError(rank.comm, &async) != ncclSuccess) return ncclSuccess;
  return async;
}

NcclCommunicator::NcclCommunicator(std::span<Backend* const> backends) {
  MIRROR_REQUIRE(!backends.empty(), InvalidArgument, "an NCCL communicator needs at least one rank");
  std::vector<int> devices;
  for (size_t r = 0; r < backends.size(); ++r) {
    MIRROR_REQUIRE(backends[r] && backends[r]->device().kind == DeviceKind::GPU, InvalidArgument, "rank ", r,
                   " of an NCCL communicator is not on a GPU");
    const int device = backends[r]->device().index;
    for (size_t s = 0; s < r; ++s)
      MIRROR_REQUIRE(devices[s] != device, InvalidArgument, "ranks ", s, " and ", r, " are both on GPU ", device,
                     ": NCCL needs one rank per GPU; use make_gpu_communicator for replicas sharing a GPU");
    devices.push_back(device);
    auto rank = std::make_unique<Rank>();
    rank->device = device;
    rank->stream = cuda::stream_of(*backends[r]);
    ranks_.push_back(std::move(rank));
  }
  std::vector<ncclComm_t> comms(backends.size(), nullptr);
  MIRROR_NCCL_CHECK(ncclCommInitAll(comms.data(), static_cast<int>(comms.size()), devices.data()));
  for (size_t r = 0; r < ranks_.size(); ++r) ranks_[r]->comm = comms[r];
  for (size_t r = 0; r < ranks_.size(); ++r) {
    Rank& rank = *ranks_[r];
    cuda::DeviceGuard guard(rank.device);
    MIRROR_CUDA_CHECK(cudaEventCreateWithFlags(&rank.done, cudaEventDisableTiming));
    MIRROR_CUDA_CHECK(cudaEventCreateWithFlags(&rank.ready, cudaEventDisableTiming));
    MIRROR_CUDA_CHECK(cudaStreamCreateWithFlags(&rank.comm_stream, cudaStreamNonBlocking));
    rank.barrier_value = backends[r]->allocate(sizeof(float));
    backends[r]->fill(rank.barrier_value.as<float>(), 1, 0.0f);
  }
}

NcclCommunicator::~NcclCommunicator() {
  for (auto& rank : ranks_) {
    std::lock_guard lock(rank->mutex);
    cudaSetDevice(rank->device);
    if (rank->comm) {
      // Every collective was waited for, so nothing of NCCL's is pending on the streams.
      if (aborted_) {
        ncclCommAbort(rank->comm);
      } else {
        ncclCommDestroy(rank->comm);
      }
      rank->comm = nullptr;
    }
    if (rank->done) cudaEventDestroy(rank->done);
    if (rank->ready) cudaEventDestroy(rank->ready);
    if (rank->comm_stream) cudaStreamDestroy(rank->comm_stream);
  }
}

template <typename Enqueue>
void NcclCommunicator::run(int rank_index, const char* op, Enqueue enqueue, bool async) {
  MIRROR_REQUIRE(rank_index >= 0 && rank_index < size(), InvalidArgument, op, ": rank ", rank_index,
                 " is outside [0, ", size(), ")");
  Rank& rank = *ranks_[static_cast<size_t>(rank_index)];
  // A blocking collective on the backend stream must not overtake async ones on the
  // communication stream: NCCL needs every rank's collectives on a communicator in one order.
  if (!async && rank.pending_op) wait_all(rank_index);
  const uint64_t sequence = ++rank.sequence;
  {
    std::lock_guard lock(rank.mutex);
    if (aborted_ || !rank.comm) fail(rank_index, op, sequence, "the communicator was aborted");
    cuda::DeviceGuard guard(rank.device);
    cudaStream_t stream = rank.stream;
    if (async) {
      MIRROR_CUDA_CHECK(cudaEventRecord(rank.ready, rank.stream));
      MIRROR_CUDA_CHECK(cudaStreamWaitEvent(rank.comm_stream, rank.ready, 0));
      stream = rank.comm_stream;
    }
    const ncclResult_t status = enqueue(rank.comm, stream);
    if (status != ncclSuccess) {
      const char* detail = ncclGetLastError(rank.comm);
      fail(rank_index, op, sequence,
           str(ncclGetErrorString(status), detail && *detail ? str(": ", detail) : std::string()));
    }
    MIRROR_CUDA_CHECK(cudaEventRecord(rank.done, stream));
  }
  if (async) {
    rank.pending_op = op;
    rank.pending_sequence = sequence;
    return;
  }
  wait(rank_index, op, sequence);
}

void NcclCommunicator::all_reduce_sum_async(int rank, std::span<float> data, const char* what) {
  if (data.empty()) return;
  run(rank, what, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, comm, stream);
  }, /*async=*/true);
}

void NcclCommunicator::wait_all(int rank_index) {
  MIRROR_REQUIRE(rank_index >= 0 && rank_index < size(), InvalidArgument, "wait_all: rank ", rank_index,
                 " is outside [0, ", size(), ")");
  Rank& rank = *ranks_[static_cast<size_t>(rank_index)];
  if (!rank.pending_op) return;
  const char* op = std::exchange(rank.pending_op, nullptr);
  {
    cuda::DeviceGuard guard(rank.device);
    // `done` was last recorded after the last async collective: the backend stream continues
    // only after all of them.
    MIRROR_CUDA_CHECK(cudaStreamWaitEvent(rank.stream, rank.done, 0));
  }
  wait(rank_index, op, rank.pending_sequence);
}

void NcclCommunicator::wait(int rank_index, const char* op, uint64_t sequence) {
  Rank& rank = *ranks_[static_cast<size_t>(rank_index)];
  const auto start = Clock::now();
  const auto deadline = start + timeout();
  for (;;) {
    const cudaError_t query = cudaEventQuery(rank.done);
    if (query == cudaSuccess) return;
    if (query != cudaErrorNotReady) {
      cudaGetLastError();
      abort(str(op, " #", sequence, " on rank ", rank_index, " failed on the GPU: ", cudaGetErrorName(query), " (",
                cudaGetErrorString(query), ")"));
      fail(rank_index, op, sequence, str("CUDA error ", cudaGetErrorName(query)));
    }
    const ncclResult_t async = async_error(rank);
    if (async != ncclSuccess && async != ncclInProgress) {
      const std::string why = str("NCCL reported ", ncclGetErrorString(async));
      abort(str(op, " #", sequence, " on rank ", rank_index, ": ", why));
      fail(rank_index, op, sequence, why);
    }
    if (aborted_) fail(rank_index, op, sequence, "the communicator was aborted");
    const auto now = Clock::now();
    if (now > deadline) {
      const auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout()).count();
      abort(str(op, " #", sequence, " on rank ", rank_index, " did not complete within ", timeout_ms,
                " ms: a replica is missing or hung"));
      fail(rank_index, op, sequence, str("timed out after ", timeout_ms, " ms"));
    }
    if (now - start < kSpinTime) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(kPollInterval);
    }
  }
}

void NcclCommunicator::fail(int rank, const char* op, uint64_t sequence, const std::string& why) {
  std::string reason;
  {
    std::lock_guard lock(abort_mutex_);
    reason = abort_reason_;
  }
  throw CollectiveError(str("NCCL ", op, " #", sequence, " on rank ", rank, " (GPU ",
                            ranks_[static_cast<size_t>(rank)]->device, ") failed: ", why,
                            reason.empty() ? std::string() : str(" [abort reason: ", reason, "]")));
}

void NcclCommunicator::abort(const std::string& reason) {
  {
    std::lock_guard lock(abort_mutex_);
    if (abort_reason_.empty()) abort_reason_ = reason;
  }
  aborted_ = true;
  abort_comms();
}

void NcclCommunicator::abort_comms() noexcept {
  for (auto& rank : ranks_) {
    std::lock_guard lock(rank->mutex);
    if (!rank->comm) continue;
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(rank->device);
    ncclCommAbort(rank->comm);  // also ends this rank's kernels that wait for a missing peer
    rank->comm = nullptr;
    cudaSetDevice(previous);
  }
}

void NcclCommunicator::all_reduce_sum(int rank, std::span<float> data, const char* what) {
  if (data.empty()) return;
  run(rank, what, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, comm, stream);
  });
}

void NcclCommunicator::broadcast(int rank, std::span<float> data, int root) {
  MIRROR_REQUIRE(root >= 0 && root < size(), InvalidArgument, "broadcast root ", root, " is outside [0, ", size(), ")");
  if (data.empty()) return;
  run(rank, "broadcast", [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(data.data(), data.data(), data.size(), ncclFloat, root, comm, stream);
  });
}

void NcclCommunicator::barrier(int rank) {
  MIRROR_REQUIRE(rank >= 0 && rank < size(), InvalidArgument, "barrier: rank ", rank, " is outside [0, ", size(), ")");
  float* value = ranks_[static_cast<size_t>(rank)]->barrier_value.as<float>();
  run(rank, "barrier", [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(value, value, 1, ncclFloat, ncclSum, comm, stream);
  });
}

}  // namespace mirror
