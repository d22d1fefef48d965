// MpiWorld over a real MPI library (see mpi_world.hpp).
#include "mirror/collectives/mpi_world.hpp"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>

#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

std::atomic<bool> g_active{false};
std::atomic<bool> g_failed{false};

void check_mpi(int status, const char* call) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw CollectiveError(str(call, " failed: ", std::string(text, static_cast<size_t>(length))));
}

}  // namespace

MpiWorld::MpiWorld() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  } else {
    MPI_Query_thread(&provided);
  }
  MIRROR_REQUIRE(provided >= MPI_THREAD_MULTIPLE, CollectiveError,
                 "the MPI library offers thread level ", provided, " but Mirror's workers need MPI_THREAD_MULTIPLE (",
                 MPI_THREAD_MULTIPLE, "): use an MPI built with thread support (Debian's OpenMPI is)");
  // Errors come back as codes, so that a lost peer becomes a CollectiveError naming it.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  char name[MPI_MAX_PROCESSOR_NAME];
  int length = 0;
  MPI_Get_processor_name(name, &length);
  host_.assign(name, static_cast<size_t>(length));
  g_active = true;
}

MpiWorld::~MpiWorld() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (g_failed && size_ > 1) {
    std::cerr.flush();
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  g_active = false;
  MPI_Finalize();
}

void MpiWorld::mark_failed() { g_failed = true; }

MpiWorld& MpiWorld::get() {
  static MpiWorld world;
  return world;
}

bool MpiWorld::active() { return g_active; }

namespace {

// Polls `request` until done; a worker that never joins becomes an error, not a hang.
void wait_for(MPI_Request& request, const std::string& what, int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int done = 0;;) {
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    MIRROR_REQUIRE(std::chrono::steady_clock::now() < deadline, CollectiveError, "the workers' check of ", what,
                   " timed out after ", timeout_ms, " ms: some worker never joined it (it died, hangs, or runs another "
                   "program)");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace

std::vector<std::string> MpiWorld::all_gather(const std::string& value, const std::string& what) const {
  const int length = static_cast<int>(value.size());
  std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD, &request), "MPI_Iallgather");
  wait_for(request, what, timeout_ms_);
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[static_cast<size_t>(r)] = total;
    total += lengths[static_cast<size_t>(r)];
  }
  std::string all(static_cast<size_t>(std::max(total, 1)), '\0');
  check_mpi(MPI_Iallgatherv(value.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                            MPI_COMM_WORLD, &request),
            "MPI_Iallgatherv");
  wait_for(request, what, timeout_ms_);
  std::vector<std::string> values;
  for (int r = 0; r < size_; ++r)
    values.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                                static_cast<size_t>(lengths[static_cast<size_t>(r)])));
  return values;
}

std::string MpiWorld::broadcast_from_chief(std::string bytes, const std::string& what) const {
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibcast(bytes.data(), static_cast<int>(bytes.size()), MPI_CHAR, 0, MPI_COMM_WORLD, &request), "MPI_Ibcast");
  wait_for(request, what, timeout_ms_);
  return bytes;
}

void MpiWorld::agree(const std::string& what, const std::string& value) const {
  const std::vector<std::string> values = all_gather(value, what);
  for (int r = 1; r < size_; ++r)
    MIRROR_REQUIRE(values[static_cast<size_t>(r)] == values[0], InvalidArgument, "the workers disagree on ", what,
                   ": worker 0 has ", values[0], ", worker ", r, " has ", values[static_cast<size_t>(r)],
                   " (every worker must run the same program with the same flags)");
}

void abort_job_if_multi_worker(int exit_code) {
  if (!MpiWorld::active() || MpiWorld::get().size() < 2) return;
  std::cerr.flush();
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

}  // namespace mirror
