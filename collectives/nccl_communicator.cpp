// NcclCommunicator: NCCL collectives on each rank's backend stream, with a host-side deadline
// (see nccl_communicator.hpp for who waits for what).
#include "mirror/collectives/nccl_communicator.hpp"

#include <chrono>
#include <thread>
#include <utility>

#include "mirror/engine/cuda/cuda_backend.hpp"
#include "mirror/engine/cuda/cuda_handles.hpp"
#include "mirror/engine/cuda/nccl_check.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

using Clock = std::chrono::steady_clock;

// Spin (yielding) this long before sleeping between polls: most collectives finish sooner.
constexpr auto kSpinTime = std::chrono::microseconds(200);
constexpr auto kPollInterval = std::chrono::microseconds(50);
// How long abort_comms() waits for rank threads to come out of NCCL once their abort flags are up.
constexpr auto kAbortWait = std::chrono::seconds(10);

// ncclCommAbort with `device` current, restoring the caller's device.
void abort_on_device(ncclComm_t comm, int device) noexcept {
  int previous = 0;
  const bool restore = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(device);
  ncclCommAbort(comm);
  if (restore) cudaSetDevice(previous);
}

// Owns the communicators ncclCommInitAll creates until the constructor has finished, so that a
// throw in between (an event, a stream, an allocation) destroys them instead of leaking them.
class NcclComms {
 public:
  explicit NcclComms(size_t count) : comms_(count, nullptr) {}
  ~NcclComms() {
    for (ncclComm_t comm : comms_)
      if (comm) ncclCommDestroy(comm);
  }
  NcclComms(const NcclComms&) = delete;
  NcclComms& operator=(const NcclComms&) = delete;

  ncclComm_t* data() { return comms_.data(); }
  size_t size() const { return comms_.size(); }
  // The caller takes a communicator by setting its slot to nullptr.
  std::span<ncclComm_t> span() { return comms_; }

 private:
  std::vector<ncclComm_t> comms_;
};

}  // namespace

// The rank's own thread holds one of these around each NCCL call on its communicator. Not granted
// once abort_comms() has closed the rank, or once an abort has begun: taking kInNccl and then
// reading aborted_ (both sequentially consistent) pairs with abort() storing aborted_ and then
// reading the ranks' access, so either the caller sees the abort or the aborter sees the caller.
class NcclCommunicator::NcclAccess {
 public:
  NcclAccess(Rank& rank, const std::atomic<bool>& aborted) : access_(rank.access) {
    Access expected = Access::kIdle;
    granted_ = access_.compare_exchange_strong(expected, Access::kInNccl);
    if (granted_ && aborted.load()) release();
  }
  ~NcclAccess() { release(); }
  NcclAccess(const NcclAccess&) = delete;
  NcclAccess& operator=(const NcclAccess&) = delete;

  bool granted() const { return granted_; }

 private:
  void release() {
    if (granted_) access_.store(Access::kIdle);
    granted_ = false;
  }

  std::atomic<Access>& access_;
  bool granted_ = false;
};

ncclResult_t NcclCommunicator::async_error(Rank& rank) {
  NcclAccess access(rank, aborted_);
  if (!access.granted()) return ncclSuccess;  // aborted: wait() reports that itself
  ncclResult_t async = ncclSuccess;
  if (ncclCommGetAsyncError(rank.comm, &async) != ncclSuccess) return ncclSuccess;
  return async;
}

std::vector<int> NcclCommunicator::make_ranks(std::span<Backend* const> backends) {
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
  return devices;
}

void NcclCommunicator::finish_ranks(std::span<Backend* const> backends, std::span<ncclComm_t> comms) {
  for (size_t r = 0; r < ranks_.size(); ++r) {
    Rank& rank = *ranks_[r];
    cuda::DeviceGuard guard(rank.device);
    rank.done = cuda::Event::create();
    rank.ready = cuda::Event::create();
    rank.comm_stream = cuda::Stream::create();
    rank.barrier_value = backends[r]->allocate(sizeof(float));
    backends[r]->fill(rank.barrier_value.as<float>(), 1, 0.0f);
  }
  // Nothing can throw past here: the ranks (and the destructor) own the communicators now.
  for (size_t r = 0; r < ranks_.size(); ++r) ranks_[r]->comm = std::exchange(comms[r], nullptr);
}

NcclCommunicator::NcclCommunicator(std::span<Backend* const> backends)
    : world_size_(static_cast<int>(backends.size())) {
  const std::vector<int> devices = make_ranks(backends);
  NcclComms comms(backends.size());
  MIRROR_NCCL_CHECK(ncclCommInitAll(comms.data(), static_cast<int>(comms.size()), devices.data()));
  finish_ranks(backends, comms.span());
}

NcclCommunicator::NcclCommunicator(std::span<Backend* const> backends, const ncclUniqueId& id, int world_size,
                                   int first_global_rank)
    : world_size_(world_size), first_global_rank_(first_global_rank) {
  MIRROR_REQUIRE(first_global_rank >= 0 && first_global_rank + static_cast<int>(backends.size()) <= world_size,
                 InvalidArgument, "global ranks [", first_global_rank, ", ", first_global_rank + int(backends.size()),
                 ") do not fit a world of ", world_size);
  const std::vector<int> devices = make_ranks(backends);
  NcclComms comms(backends.size());
  {
    // One group, so that this process's ranks join together (one thread, several GPUs).
    MIRROR_NCCL_CHECK(ncclGroupStart());
    ncclResult_t status = ncclSuccess;
    for (size_t r = 0; r < devices.size() && status == ncclSuccess; ++r) {
      cuda::DeviceGuard guard(devices[r]);
      status = ncclCommInitRank(&comms.data()[r], world_size, id, first_global_rank + static_cast<int>(r));
    }
    const ncclResult_t end = ncclGroupEnd();
    MIRROR_NCCL_CHECK(status);
    MIRROR_NCCL_CHECK(end);
  }
  finish_ranks(backends, comms.span());
}

NcclCommunicator::~NcclCommunicator() {
  // No rank thread calls into NCCL any more (every collective was waited for or failed): an abort
  // that had to leave a communicator alive for such a thread can finish now.
  if (aborted_) abort_comms();
  for (auto& rank : ranks_) {
    cudaSetDevice(rank->device);
    if (!aborted_ && rank->comm) ncclCommDestroy(rank->comm);
    rank->comm = nullptr;
    rank->done.reset();  // with the rank's device current
    rank->ready.reset();
    rank->comm_stream.reset();
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
  if (aborted_) fail(rank_index, op, sequence, "the communicator was aborted");
  {
    cuda::DeviceGuard guard(rank.device);
    cudaStream_t stream = rank.stream;
    if (async) {
      MIRROR_CUDA_CHECK(cudaEventRecord(rank.ready.get(), rank.stream));
      MIRROR_CUDA_CHECK(cudaStreamWaitEvent(rank.comm_stream.get(), rank.ready.get(), 0));
      stream = rank.comm_stream.get();
    }
    // The enqueue may block until the peers arrive; abort() can still reach it (see abort_comms()).
    std::string error;
    {
      NcclAccess access(rank, aborted_);
      if (!access.granted()) {
        error = "the communicator was aborted";
      } else if (const ncclResult_t status = enqueue(rank.comm, stream); status != ncclSuccess) {
        const char* detail = ncclGetLastError(rank.comm);
        error = str(ncclGetErrorString(status), detail && *detail ? str(": ", detail) : std::string());
      }
    }
    if (!error.empty()) fail(rank_index, op, sequence, error);
    MIRROR_CUDA_CHECK(cudaEventRecord(rank.done.get(), stream));
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
    MIRROR_CUDA_CHECK(cudaStreamWaitEvent(rank.stream, rank.done.get(), 0));
  }
  wait(rank_index, op, rank.pending_sequence);
}

void NcclCommunicator::wait(int rank_index, const char* op, uint64_t sequence) {
  Rank& rank = *ranks_[static_cast<size_t>(rank_index)];
  const auto start = Clock::now();
  const auto deadline = start + timeout();
  for (;;) {
    const cudaError_t query = cudaEventQuery(rank.done.get());
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

// A rank's thread may be blocked inside an NCCL call (an enqueue waiting for peers that will never
// come), so abort must not wait for it, and only ncclCommAbort on that rank's own communicator
// raises the abort flag its wait polls. NCCL allows that call from another thread, but the ranks of
// one process share their resources and NCCL frees them all in the LAST ncclCommAbort of those
// ranks, which must not happen while any thread is still inside NCCL. Hence:
//   1. the anchor: a rank whose thread is outside NCCL, closed (kIdle -> kClosed) so it cannot
//      enter again;
//   2. ncclCommAbort on every other rank, inside NCCL or not: flags up, device kernels and blocked
//      host calls return, nothing freed while the anchor is left;
//   3. wait until those ranks' threads are out of NCCL and close them;
//   4. ncclCommAbort on the anchor, which frees everything.
// If every rank stays inside NCCL or a thread does not come out within kAbortWait, the last
// communicator is left alive and the destructor aborts it, once the rank threads are gone.
void NcclCommunicator::abort_comms() noexcept {
  std::lock_guard lock(abort_comms_mutex_);
  std::vector<Rank*> open;
  for (auto& rank : ranks_)
    if (!rank->comm_aborted) open.push_back(rank.get());
  if (open.empty()) return;
  const auto deadline = Clock::now() + kAbortWait;
  const auto try_close = [](Rank& rank) {
    Access expected = Access::kIdle;
    return rank.access.compare_exchange_strong(expected, Access::kClosed) || expected == Access::kClosed;
  };
  Rank* anchor = nullptr;
  while (!anchor && Clock::now() < deadline) {
    for (Rank* rank : open) {
      if (try_close(*rank)) {
        anchor = rank;
        break;
      }
    }
    if (!anchor) std::this_thread::yield();
  }
  const bool anchor_closed = anchor != nullptr;
  if (!anchor) anchor = open.back();  // every rank is inside NCCL: flag the others and see
  bool others_out = true;
  for (Rank* rank : open) {
    if (rank == anchor) continue;
    abort_on_device(rank->comm, rank->device);  // also ends this rank's kernels that wait for a peer
    rank->comm_aborted = true;
  }
  for (Rank* rank : open) {
    if (rank == anchor) continue;
    while (!try_close(*rank) && Clock::now() < deadline) std::this_thread::sleep_for(kPollInterval);
    others_out = others_out && rank->access.load() == Access::kClosed;
  }
  if (!anchor_closed)
    while (!try_close(*anchor) && Clock::now() < deadline) std::this_thread::sleep_for(kPollInterval);
  if (others_out && anchor->access.load() == Access::kClosed) {
    abort_on_device(anchor->comm, anchor->device);
    anchor->comm_aborted = true;
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
