// MpiHostCommunicator: collectives among host replicas spread over the worker processes of an MPI
// job (each worker holds size() replicas, threads of its process). The replicas of a worker meet
// in process; one progress thread per worker then drives the cross-process part with non-blocking
// MPI calls, polled (MPI_Test) against a deadline, so a worker that died or hangs becomes a
// CollectiveError naming it and the operation, never a hang.
//
// Global ranks are laid out worker by worker: worker w's local rank l is global rank w * size() + l.
//
// Order of the sums (CrossWorkerSum):
// - RankOrder (default): ((r0 + r1) + r2) + ... over global ranks, the order HostCommunicator uses
//   in one process, so W workers × R replicas give bitwise the sums of one process with W·R
//   replicas. A pipelined chain: worker 0 folds its replicas and sends the partial sum to worker 1
//   chunk by chunk, which adds its replicas in order and passes it on; the last worker's sum comes
//   back down the chain. Every link carries the buffer once in each direction.
// - Fast: each worker folds its replicas, then MPI_Iallreduce (the MPI library's algorithm and order).
//
// Who waits for what: all_reduce_sum_async returns once the caller's buffer is registered; the
// buffer belongs to the communicator until wait_all(rank) returns. Collectives of one worker run
// one after the other in issue order, which every replica of every worker shares.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mirror/collectives/communicator.hpp"

namespace mirror {

enum class CrossWorkerSum { RankOrder, Fast };

class MpiHostCommunicator final : public Communicator {
 public:

  // `local_replicas` replicas in this process; every worker must pass the same number. Collective
  // over the MPI world (it duplicates MPI_COMM_WORLD).
  MpiHostCommunicator(int local_replicas, CrossWorkerSum order = CrossWorkerSum::RankOrder,
                      std::chrono::milliseconds timeout = std::chrono::minutes(10));
  // A communicator that refuses every collective with `reason` and calls no MPI function: what a
  // worker is left with after a failed step, when its peers are no longer in step with it.
  static std::unique_ptr<MpiHostCommunicator> broken(int local_replicas, int world_size, int first_global_rank,
                                                     std::string reason);
  ~MpiHostCommunicator() override;

  int size() const override { return local_; }
  int world_size() const override { return workers_ * local_; }
  int first_global_rank() const override { return worker_ * local_; }
  int worker() const { return worker_; }
  int num_workers() const { return workers_; }

  void all_reduce_sum(int rank, std::span<float> data, const char* what = "all_reduce") override;
  void all_reduce_sum_async(int rank, std::span<float> data, const char* what = "all_reduce") override;
  void wait_all(int rank) override;
  void broadcast(int rank, std::span<float> data, int root = 0) override;
  void barrier(int rank) override;
  void abort(const std::string& reason) override;

 private:
  enum class Kind { AllReduce, Broadcast, Barrier };
  struct Job {
    Kind kind = Kind::AllReduce;
    const char* what = "";
    int64_t seq = 0;
    size_t count = 0;
    int root = 0;                  // global rank (broadcast)
    std::vector<float*> buffers;   // one per local rank
    int arrived = 0;
  };
  struct Impl;  // the MPI side and the algorithms (mpi_host_communicator.cpp)

  MpiHostCommunicator(int local_replicas, int workers, int worker, std::string broken_reason);
  // Registers the caller's buffer for its next collective; the last local rank to arrive queues
  // the job. Returns the job's sequence number.
  int64_t arrive(int rank, Kind kind, std::span<float> data, const char* what, int root);
  // Waits until jobs [0, seq] are done; raises the failure that stopped them.
  void wait_done(int rank, int64_t seq, const char* what);
  void progress_loop();
  void run_job(Job& job);
  std::string describe_worker(int worker) const;
  [[noreturn]] void throw_failure();
  void fail(const std::string& reason);

  const int local_;
  int workers_ = 1;
  int worker_ = 0;
  CrossWorkerSum order_ = CrossWorkerSum::RankOrder;
  std::unique_ptr<Impl> impl_;

  std::mutex mutex_;
  std::condition_variable changed_;      // a job queued, finished, or a failure
  std::map<int64_t, Job> gathering_;     // jobs some local ranks have joined, by sequence number
  std::deque<Job> queue_;                // jobs every local rank has joined, in order
  std::vector<int64_t> issued_;          // per local rank: collectives issued so far
  int64_t done_ = 0;                     // jobs [0, done_) are finished
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
  std::string failure_;                  // guarded by mutex_; set once
  std::thread progress_;                 // declared last: started when the rest is ready
};

}  // namespace mirror
