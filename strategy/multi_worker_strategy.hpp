// MultiWorkerMirroredStrategy: one process per worker (launched by mpirun or srun), each with its
// own host replicas; a step's global batch is split across every worker's replicas in global rank
// order, and gradients are summed within the worker, then across workers over MPI on the same
// bucket schedule as in one process (MpiHostCommunicator). By default the sums are those of one
// process with as many replicas in all, bitwise.
//
// Every worker runs the same program: the chief (worker 0) prints and writes files, the others
// only compute. A worker that fails ends the job (abort_job_if_multi_worker in main); one that is
// lost makes the others' next collective fail within the collective timeout, naming it.
#pragma once

#include <chrono>

#include "mirror/collectives/mpi_host_communicator.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

class MultiWorkerMirroredStrategy final : public Strategy {
 public:
  struct Options {
    int replicas_per_worker = 1;
    int threads = 0;  // host threads per worker in all (0 = every hardware thread)
    CrossWorkerSum order = CrossWorkerSum::RankOrder;
    std::chrono::milliseconds collective_timeout = std::chrono::minutes(10);
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
