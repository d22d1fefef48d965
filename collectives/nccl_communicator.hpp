// NcclCommunicator: collectives across replicas that each own one GPU, through NCCL.
//
// Who waits for what: each rank's collective is queued on that rank's backend stream (after the
// work already queued there, before the work queued after), so the caller needs no extra event or
// synchronisation to use the result on that stream. The call then waits on the host until the
// collective has completed on this rank's GPU, polling an event and ncclCommGetAsyncError: that is
// how a peer that never arrives becomes a CollectiveError (after timeout()) instead of a hang.
// On expiry or abort() every NCCL communicator is aborted (ncclCommAbort), which also releases
// ranks whose kernels wait for the missing peer, and ranks whose thread is blocked inside an NCCL
// call (an enqueue may wait on the host for peers, e.g. to connect on first use): abort() never
// waits for a lock such a thread holds (see abort_comms() for how it avoids freeing a communicator
// under that thread).
//
// Ranks must be on distinct GPUs: NCCL refuses two ranks on one device. Logical replicas sharing a
// GPU are combined by make_gpu_communicator (collectives/gpu_communicator.hpp).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/backend.hpp"
#include "mirror/engine/buffer.hpp"
#include "mirror/engine/cuda/cuda_handles.hpp"

namespace mirror {

class NcclCommunicator final : public Communicator {
 public:
  // Rank r runs on backends[r] (a CUDA backend; the GPUs must differ). Creates every rank's NCCL
  // communicator at once with ncclCommInitAll; throws InvalidArgument or CollectiveError.
  explicit NcclCommunicator(std::span<Backend* const> backends);
  // This process's part of a communicator across processes: backends[r] is global rank
  // first_global_rank + r of world_size, joined through ncclCommInitRank with `id` (made by
  // ncclGetUniqueId on one process and given to all, e.g. broadcast over MPI:
  // make_nccl_communicator_over_mpi). Collective across processes.
  NcclCommunicator(std::span<Backend* const> backends, const ncclUniqueId& id, int world_size, int first_global_rank);
  ~NcclCommunicator() override;
  // Destroy it before the backends whose streams it uses.
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int size() const override { return static_cast<int>(ranks_.size()); }
  int world_size() const override { return world_size_; }
  int first_global_rank() const override { return first_global_rank_; }
  // `data` is device memory of rank's backend.
  void all_reduce_sum(int rank, std::span<float> data, const char* what = "all_reduce") override;
  // Queued on the rank's communication stream after the work already on its backend stream
  // (an event orders them), so it overlaps what the caller queues next; wait_all joins the
  // streams again and waits on the host, with the deadline, for every such collective.
  void all_reduce_sum_async(int rank, std::span<float> data, const char* what = "all_reduce") override;
  void wait_all(int rank) override;
  void broadcast(int rank, std::span<float> data, int root = 0) override;
  // An all-reduce of one float: returns once every rank has reached it.
  void barrier(int rank) override;
  void abort(const std::string& reason) override;

 private:
  // Who may call NCCL on a rank's communicator: the rank's own thread while it holds kInNccl
  // (taken from kIdle, see NcclAccess in the .cpp), or abort_comms() once it has moved the rank
  // from kIdle to kClosed, after which the rank's thread never calls NCCL again.
  enum class Access { kIdle, kInNccl, kClosed };
  class NcclAccess;

  struct Rank {
    int device = 0;
    cudaStream_t stream = nullptr;
    ncclComm_t comm = nullptr;  // valid until ~NcclCommunicator; NCCL frees it with the last rank's
                                // ncclCommAbort/ncclCommDestroy, see abort_comms()
    std::atomic<Access> access{Access::kIdle};
    bool comm_aborted = false;  // ncclCommAbort was called on comm (guarded by abort_comms_mutex_)
    cuda::Event done;
    cuda::Stream comm_stream;            // all_reduce_sum_async's collectives
    cuda::Event ready;                   // the backend stream's work before an async collective
    const char* pending_op = nullptr;    // the last async collective not yet waited for
    uint64_t pending_sequence = 0;
    uint64_t sequence = 0;      // collectives issued by this rank so far
    DeviceBuffer barrier_value;
  };

  // Checks rank and abort state, takes the next sequence number and queues `enqueue(comm, stream)`.
  // With `async`, queues on the communication stream and returns; otherwise on the backend stream
  // and waits.
  template <typename Enqueue>
  void run(int rank, const char* op, Enqueue enqueue, bool async = false);
  // Polls until rank's last collective is done; throws CollectiveError on error, abort or timeout.
  void wait(int rank, const char* op, uint64_t sequence);
  // ncclCommGetAsyncError of rank's communicator (ncclSuccess once it is aborted).
  ncclResult_t async_error(Rank& rank);
  [[noreturn]] void fail(int rank, const char* op, uint64_t sequence, const std::string& why);
  // Calls ncclCommAbort on every communicator not yet aborted; safe while rank threads are inside
  // NCCL calls. Idempotent.
  void abort_comms() noexcept;

  // Checks that every backend is on its own GPU and makes the ranks (without communicators).
  std::vector<int> make_ranks(std::span<Backend* const> backends);
  // Gives each rank its communicator (`comms`, owned from now on), events, stream and barrier value.
  void finish_ranks(std::span<Backend* const> backends, std::span<ncclComm_t> comms);

  std::vector<std::unique_ptr<Rank>> ranks_;
  int world_size_ = 0;
  int first_global_rank_ = 0;
  std::atomic<bool> aborted_{false};
  std::mutex abort_mutex_;  // guards abort_reason_
  std::string abort_reason_;
  std::mutex abort_comms_mutex_;  // one abort_comms() at a time; never held by a rank's own NCCL call
};

}  // namespace mirror
