// detect_launch(): what the launcher's environment variables say, without initialising MPI.
#include <cstdlib>
#include <string>

#include "mirror/collectives/mpi_world.hpp"

namespace mirror {
namespace {

int env_int(const char* name, int missing) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return missing;
  char* end = nullptr;
  const long value = std::strtol(v, &end, 10);
  return *end == '\0' ? static_cast<int>(value) : missing;
}

}  // namespace

LaunchInfo detect_launch() {
  struct Source {
    const char* rank;
    const char* size;
    const char* launcher;
  };
  // OpenMPI's own variables first: under mpirun inside a Slurm allocation both are set.
  for (const Source& s : {Source{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "mpirun"},
                          Source{"PMIX_RANK", "SLURM_NTASKS", "pmix"}, Source{"PMI_RANK", "PMI_SIZE", "pmi"},
                          Source{"SLURM_PROCID", "SLURM_NTASKS", "slurm"}}) {
    const int rank = env_int(s.rank, -2);
    if (rank == -2) continue;
    return {.launched = true, .rank = rank, .size = env_int(s.size, -1), .launcher = s.launcher};
  }
  return {};
}

}  // namespace mirror
