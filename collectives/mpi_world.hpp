// MpiWorld: this process's place among the workers of a job launched by mpirun or srun. MPI is
// initialised on first use (MPI_THREAD_MULTIPLE: the communicators' progress threads call MPI
// while the main thread may check agreement) and finalised when the process exits normally; a
// process that fails calls abort_job() so that the other workers are stopped at once, not left to
// wait for a collective that will never come.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mirror {

// What the environment says about a launch, read without initialising MPI: OpenMPI's mpirun sets
// OMPI_COMM_WORLD_SIZE/RANK, PMIx launchers (srun --mpi=pmix) PMIX_RANK, MPICH's PMI_RANK/PMI_SIZE,
// Slurm SLURM_PROCID/SLURM_NTASKS.
struct LaunchInfo {
  bool launched = false;    // some launcher started this process
  int rank = 0;             // -1 when the launcher gives no rank
  int size = 1;             // -1 when the launcher gives no world size
  std::string launcher;     // "mpirun", "pmix", "pmi", "slurm" or ""
};
LaunchInfo detect_launch();

class MpiWorld {
 public:
  // Initialises MPI on the first call. Throws CollectiveError when this build has no MPI (saying how
  // to get it) or when the MPI library cannot serve several threads.
  static MpiWorld& get();
  // Whether get() has initialised MPI and it has not been finalised.
  static bool active();
  // Records that a collective failed: the workers are out of step, so at exit this process ends
  // the job (MPI_Abort) instead of finalising MPI, which would wait for the lost worker.
  static void mark_failed();

  int rank() const { return rank_; }  // this worker, 0 = the chief
  int size() const { return size_; }  // workers in the job
  const std::string& host() const { return host_; }

  // Every worker's `value`, in rank order. Collective: every worker calls it in the same order.
  // Raises CollectiveError when some worker has not joined within timeout_ms() (naming `what`).
  std::vector<std::string> all_gather(const std::string& value, const std::string& what = "all_gather") const;
  // The chief's `bytes` on every worker (the others' are ignored; every worker passes the same
  // size). Collective, bounded by timeout_ms() like all_gather.
  std::string broadcast_from_chief(std::string bytes, const std::string& what) const;
  // Throws InvalidArgument naming both values when any worker's `value` differs from the chief's,
  // e.g. "the workers disagree on the batch size: worker 0 has 32, worker 1 has 64". Collective.
  void agree(const std::string& what, const std::string& value) const;

  int64_t timeout_ms() const { return timeout_ms_; }
  void set_timeout_ms(int64_t timeout_ms) { timeout_ms_ = timeout_ms; }

  ~MpiWorld();  // MPI_Finalize, or MPI_Abort after mark_failed()
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

 private:
  MpiWorld();
  int rank_ = 0;
  int size_ = 1;
  std::string host_;
  int64_t timeout_ms_ = 10 * 60 * 1000;
};

// Ends every worker of the job with `exit_code` (MPI_Abort) when this process is one of several
// MPI workers; otherwise does nothing and returns. For main's error path: a worker that failed
// must not leave the others waiting in a collective.
void abort_job_if_multi_worker(int exit_code);

}  // namespace mirror
