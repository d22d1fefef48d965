// Communicator: collectives across the replicas of one strategy. Implementations: in-process host
// (host_communicator.hpp), NCCL (nccl_communicator.hpp, CUDA builds), host replicas of several
// processes over MPI (mpi_host_communicator.hpp).
//
// Ranks: the methods take the caller's local rank, in [0, size()), the replicas of this process.
// Their global ranks are first_global_rank() + local rank, in [0, world_size()); global rank 0 is
// the chief's first replica. In-process communicators have first_global_rank() 0 and world_size()
// == size().
//
// Contract (as in PyTorch's c10d): every rank issues the same collectives in the same order, each
// from its own replica's worker thread. A collective on the host blocks until every rank has
// contributed; on a GPU it is queued on the replica's stream and the caller waits through that
// stream. A collective that does not complete within timeout() raises CollectiveError naming the
// operation, its sequence number and the rank; abort() makes every pending and later collective
// raise CollectiveError, so one failing replica never leaves the others hanging.
#pragma once

#include <chrono>
#include <span>
#include <string>

namespace mirror {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int size() const = 0;  // local ranks: the replicas of this process
  virtual int world_size() const { return size(); }
  virtual int first_global_rank() const { return 0; }
  int global_rank(int local_rank) const { return first_global_rank() + local_rank; }

  // data = sum over ranks of data, in place. Every rank ends with bitwise-identical values.
  virtual void all_reduce_sum(int rank, std::span<float> data, const char* what = "all_reduce") = 0;
  // Starts all_reduce_sum and may return before it is done, so that a bucket of gradients is
  // reduced while backward still computes the next. The reduction is ordered after the work the
  // caller queued on its replica's stream before this call; `data` must not be touched until
  // wait_all(rank) returns. The default (host) does it at once.
  virtual void all_reduce_sum_async(int rank, std::span<float> data, const char* what = "all_reduce") {
    all_reduce_sum(rank, data, what);
  }
  // Orders the caller's stream after every all_reduce_sum_async of `rank` and raises their errors;
  // raises CollectiveError when they are not done within timeout() (the handles' deadline).
  virtual void wait_all(int /*rank*/) {}

  // data = root's data on every rank; `root` is a global rank.
  virtual void broadcast(int rank, std::span<float> data, int root = 0) = 0;
  virtual void barrier(int rank) = 0;

  // Fails every pending and future collective with `reason`. Safe from any thread; idempotent.
  virtual void abort(const std::string& reason) = 0;

  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }

 private:
  std::chrono::milliseconds timeout_{std::chrono::minutes(10)};
};

}  // namespace mirror
