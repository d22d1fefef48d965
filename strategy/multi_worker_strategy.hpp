// MultiWorkerMirroredStrategy: one process per worker (launched by mpirun or srun), each with its
// own replicas: one per GPU given to it, or host replicas. A step's global batch is split across
// every worker's replicas in global rank order. Host replicas' gradients are summed within the
// worker, then across workers over MPI on the same bucket schedule as in one process
// (MpiHostCommunicator; by default bitwise the sums of one process with as many replicas in all);
// GPU replicas' by one NCCL communicator across every GPU of every worker, bootstrapped over MPI.
//
// Every worker runs the same program: the chief (worker 0) prints and writes files, the others
// only compute. A worker that fails ends the job (abort_job_if_multi_worker in main); one that is
// lost makes the others' next collective fail within the collective timeout, naming it.
#pragma once

#include <chrono>
#include <vector>

#include "mirror/collectives/mpi_host_communicator.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

class MultiWorkerMirroredStrategy final : public Strategy {
 public:
  struct Options {
    int replicas_per_worker = 1;  // host replicas (when `gpus` is empty)
    int threads = 0;  // host threads per worker in all (0 = every hardware thread)
    // This worker's GPUs, one replica each (gpus_of_worker picks them); empty: host replicas.
    // Every worker must have as many, and all GPUs or none.
    std::vector<Device> gpus = {};
    CrossWorkerSum order = CrossWorkerSum::RankOrder;
    std::chrono::milliseconds collective_timeout = kDefaultCollectiveTimeout;
  };
  // Joins the MPI job (initialising MPI) and checks that every worker runs the same Mirror version
  // with the same number of replicas; collective across workers.
  explicit MultiWorkerMirroredStrategy(const Options& options);

  int worker() const { return worker_; }
  int num_workers() const { return workers_; }
  bool is_chief() const override { return worker_ == 0; }
  void check_agreement(const std::string& what, const std::string& value) const override;

 protected:
  std::unique_ptr<Communicator> make_communicator() override;

 private:
  Options options_;
  int worker_ = 0;
  int workers_ = 1;
  bool made_ = false;  // the first communicator was made; a later one means a step failed
};

// The version every worker must share.
const char* mirror_version();

}  // namespace mirror
