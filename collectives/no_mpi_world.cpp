// MpiWorld for builds without MPI: a launch is still recognised (detect_launch), but joining it
// needs MPI, so get() says how to build with it.
#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {

MpiWorld::MpiWorld() = default;
MpiWorld::~MpiWorld() = default;

MpiWorld& MpiWorld::get() {
  throw CollectiveError(
      "this build of Mirror has no MPI, so it cannot join other workers: install libopenmpi-dev and openmpi-bin "
      "(scripts/setup.sh does) and reconfigure with -Dmpi=enabled");
}

bool MpiWorld::active() { return false; }
void MpiWorld::mark_failed() {}
std::vector<std::string> MpiWorld::all_gather(const std::string& value, const std::string&) const { return {value}; }
void MpiWorld::agree(const std::string&, const std::string&) const {}
std::string MpiWorld::broadcast_from_chief(std::string bytes, const std::string&) const { return bytes; }
void abort_job_if_multi_worker(int) {}

}  // namespace mirror
