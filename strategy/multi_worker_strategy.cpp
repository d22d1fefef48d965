// MultiWorkerMirroredStrategy (see multi_worker_strategy.hpp).
#include "mirror/strategy/multi_worker_strategy.hpp"

#include "mirror/collectives/gpu_communicator.hpp"
#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/strategy/gpu_strategies.hpp"
#include "mirror/strategy/host_backends.hpp"

#ifndef MIRROR_VERSION
#define MIRROR_VERSION "unknown"
#endif

namespace mirror {

const char* mirror_version() { return MIRROR_VERSION; }

namespace {

// Checked before anything else: a worker of another version may lay out its buffers differently.
// (The communicator checks the number of replicas per worker.)
MultiWorkerMirroredStrategy::Options agreed(const MultiWorkerMirroredStrategy::Options& options) {
  MpiWorld& world = MpiWorld::get();
  world.set_timeout_ms(options.collective_timeout.count());
  world.agree("the Mirror version", mirror_version());
  world.agree("the order of cross-worker sums", options.order == CrossWorkerSum::RankOrder ? "rank order" : "fast");
  world.agree("the kind of replicas", options.gpus.empty() ? "host replicas" : "GPUs");
  return options;
}

std::vector<std::unique_ptr<Backend>> worker_backends(const MultiWorkerMirroredStrategy::Options& options) {
  if (options.gpus.empty()) return host_backends(options.replicas_per_worker, options.threads);
  return gpu_backends(options.gpus, 1, "MultiWorkerMirroredStrategy");
}

}  // namespace

MultiWorkerMirroredStrategy::MultiWorkerMirroredStrategy(const Options& options)
    : Strategy("multi-worker", worker_backends(options)), options_(agreed(options)) {
  worker_ = MpiWorld::get().rank();
  workers_ = MpiWorld::get().size();
  start();
}

std::unique_ptr<Communicator> MultiWorkerMirroredStrategy::make_communicator() {
  if (made_) {
    // The workers are no longer in step (some replicas may have applied an update and others not),
    // and a new MPI communicator would need every worker's help: this worker is done.
    return MpiHostCommunicator::broken(num_replicas(), workers_ * num_replicas(), worker_ * num_replicas(),
                                       "a step failed on this worker, so the workers are out of step: end the job "
                                       "and continue from a backup");
  }
  made_ = true;
  if (!options_.gpus.empty()) {
    std::vector<Backend*> backends;
    for (int r = 0; r < num_replicas(); ++r) backends.push_back(&backend(r));
    return make_gpu_communicator_over_mpi(backends);
  }
  return std::make_unique<MpiHostCommunicator>(num_replicas(), options_.order, options_.collective_timeout);
}

void MultiWorkerMirroredStrategy::check_agreement(const std::string& what, const std::string& value) const {
  MpiWorld::get().agree(what, value);
}

}  // namespace mirror
