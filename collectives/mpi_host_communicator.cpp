// Host replicas of several worker processes, reduced in process then across processes over MPI
// (see mpi_host_communicator.hpp).
#include "mirror/collectives/mpi_host_communicator.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

using Clock = std::chrono::steady_clock;

// Chunks of the chain: large enough to move at full speed, small enough that the links pipeline.
// A buffer is cut into at least kMinChunks chunks (so that even a mid-sized one pipelines: with one
// chunk the transfers down and back up the chain would follow each other) of kMinChunkFloats to
// kChunkFloats floats.
constexpr size_t kChunkFloats = size_t{1} << 16;     // 256 KiB
constexpr size_t kMinChunkFloats = size_t{1} << 12;  // 16 KiB
constexpr size_t kMinChunks = 8;
constexpr size_t kMaxChunks = 16000;               // two tags per chunk stay under MPI's 32767
constexpr auto kSpinTime = std::chrono::milliseconds(1);
constexpr auto kPollSleep = std::chrono::microseconds(50);

std::string mpi_error_text(int status) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  return std::string(text, static_cast<size_t>(length));
}

size_t chunk_floats(size_t count) {
  const size_t pipelined = std::clamp((count + kMinChunks - 1) / kMinChunks, kMinChunkFloats, kChunkFloats);
  return std::max(pipelined, (count + kMaxChunks - 1) / kMaxChunks);
}

// dst[i] += src[i] over [0, count): the same float additions as HostCommunicator's loop.
void add_into(float* __restrict__ dst, const float* __restrict__ src, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] += src[i];
}

}  // namespace

// The MPI side: this worker's duplicate of the world communicator, the chain's scratch buffer
// (grown to the largest collective on first use, then reused), and the algorithms.
struct MpiHostCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  std::vector<float> scratch;
  Clock::time_point idle_since;  // the last progress: past kSpinTime without any, sleep between polls

  // Throws when the deadline has passed (naming `peer` and what was awaited), when an MPI call
  // failed, or when the communicator failed or is stopping; otherwise lets the core go a moment.
  static void check(MpiHostCommunicator& c, const Job& job, int peer, const char* awaiting, Clock::time_point deadline);
  static void test(MpiHostCommunicator& c, MPI_Request& request, bool& done, const Job& job, int peer);
  static void wait(MpiHostCommunicator& c, MPI_Request& request, const Job& job, int peer, const char* awaiting,
                   Clock::time_point deadline);
  class Chain;  // the rank-order chain's per-chunk state machine
  static void chain_all_reduce(MpiHostCommunicator& c, Job& job, Clock::time_point deadline);
  static void fast_all_reduce(MpiHostCommunicator& c, Job& job, Clock::time_point deadline);
  static void broadcast(MpiHostCommunicator& c, Job& job, Clock::time_point deadline);
  // buffers[k][begin, end) = src[begin, end) for every local buffer k other than src.
  static void deliver(const Job& job, const float* src, size_t begin, size_t end);
  // scratch[begin, end) = the fold of this worker's buffers onto it (worker 0: onto buffer 0).
  static void fold(const Job& job, float* scratch, size_t begin, size_t end, bool onto_scratch);
};

std::string MpiHostCommunicator::describe_worker(int worker) const {
  return local_ == 1 ? str("worker ", worker, " (global rank ", worker, ")")
                     : str("worker ", worker, " (global ranks ", worker * local_, "-", worker * local_ + local_ - 1, ")");
}

void MpiHostCommunicator::Impl::check(MpiHostCommunicator& c, const Job& job, int peer, const char* awaiting,
                                      Clock::time_point deadline) {
  if (c.failed_ || c.stopping_) throw CollectiveError(str(job.what, " #", job.seq, " was abandoned on worker ", c.worker_));
  if (Clock::now() > deadline) {
    throw CollectiveError(str(job.what, " #", job.seq, " timed out after ", c.timeout().count(), " ms on ",
                              c.describe_worker(c.worker_), ": ", awaiting, " ",
                              peer >= 0 ? c.describe_worker(peer) : std::string("the other workers"),
                              " never came (it died, hangs, or issued its collectives in another order)"));
  }
  // Spin a little (most transfers land soon), then sleep, so that a worker waiting for a slower
  // one leaves the cores to its replicas' backward pass.
  if (Clock::now() - c.impl_->idle_since < kSpinTime) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(kPollSleep);
  }
}

void MpiHostCommunicator::Impl::test(MpiHostCommunicator& c, MPI_Request& request, bool& done, const Job& job,
                                     int peer) {
  int flag = 0;
  const int status = MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
  if (status != MPI_SUCCESS) {
    throw CollectiveError(str(job.what, " #", job.seq, " failed on ", c.describe_worker(c.worker_), " exchanging with ",
                              peer >= 0 ? c.describe_worker(peer) : std::string("the other workers"), ": ",
                              mpi_error_text(status), " (a worker was lost)"));
  }
  done = flag != 0;
}

void MpiHostCommunicator::Impl::wait(MpiHostCommunicator& c, MPI_Request& request, const Job& job, int peer,
                                     const char* awaiting, Clock::time_point deadline) {
  for (bool done = false;;) {
    test(c, request, done, job, peer);
    if (done) return;
    check(c, job, peer, awaiting, deadline);
  }
}

void MpiHostCommunicator::Impl::deliver(const Job& job, const float* src, size_t begin, size_t end) {
  for (float* b : job.buffers)
    if (b != src) std::memcpy(b + begin, src + begin, (end - begin) * sizeof(float));
}

void MpiHostCommunicator::Impl::fold(const Job& job, float* scratch, size_t begin, size_t end, bool onto_scratch) {
  size_t k = 0;
  if (!onto_scratch) std::memcpy(scratch + begin, job.buffers[k++] + begin, (end - begin) * sizeof(float));
  for (; k < job.buffers.size(); ++k) add_into(scratch + begin, job.buffers[k] + begin, end - begin);
}

// The rank-order chain (see the header): per chunk, worker w receives the partial sum of global
// ranks [0, w·R) from w - 1, adds its R replicas in order, and sends it to w + 1; the last worker's
// sum is final and travels back down the chain. Chunks move independently, so the links pipeline.
class MpiHostCommunicator::Impl::Chain {
 public:
  Chain(MpiHostCommunicator& c, Job& job)
      : c_(c), self_(*c.impl_), job_(job), n_(job.count), w_(c.worker_), last_(c.workers_ - 1),
        chunk_(chunk_floats(n_)), states_((n_ + chunk_ - 1) / chunk_) {
    if (self_.scratch.size() < n_) self_.scratch.resize(n_);
    partial_ = self_.scratch.data();
    result_ = job.buffers[0];
  }

  void run(Clock::time_point deadline) {
    if (w_ > 0) {
      for (size_t k = 0; k < states_.size(); ++k) {
        post(MPI_Irecv, partial_, k, w_ - 1, 0, states_[k].partial_in);
        states_[k].phase = Phase::AwaitPartial;
      }
    }
    for (size_t finished = 0; finished < states_.size();) {
      bool moved = false;
      for (size_t k = 0; k < states_.size(); ++k) {
        const Phase before = states_[k].phase;
        advance(k);
        moved = moved || states_[k].phase != before;
        finished += before != Phase::Done && states_[k].phase == Phase::Done;
      }
      if (moved) {
        self_.idle_since = Clock::now();
      } else if (finished < states_.size()) {
        wait_a_moment(deadline);
      }
    }
  }

 private:
  enum class Phase { AwaitPartial, Fold, AwaitFinal, Drain, Done };
  struct State {
    Phase phase = Phase::Fold;
    MPI_Request partial_in = MPI_REQUEST_NULL, partial_out = MPI_REQUEST_NULL;
    MPI_Request final_in = MPI_REQUEST_NULL, final_out = MPI_REQUEST_NULL;
  };
  using Post = int (*)(void*, int, MPI_Datatype, int, int, MPI_Comm, MPI_Request*);

  size_t begin(size_t k) const { return k * chunk_; }
  size_t end(size_t k) const { return std::min(n_, (k + 1) * chunk_); }

  // Isend or Irecv of chunk k of `buffer` with `peer`; tag 2k for partial sums, 2k + 1 for finals.
  void post(Post call, float* buffer, size_t k, int peer, int is_final, MPI_Request& request) {
    const int status = call(buffer + begin(k), static_cast<int>(end(k) - begin(k)), MPI_FLOAT, peer,
                            static_cast<int>(2 * k) + is_final, self_.comm, &request);
    if (status != MPI_SUCCESS)
      throw CollectiveError(str(job_.what, " #", job_.seq, " failed on ", c_.describe_worker(w_), ": ",
                                mpi_error_text(status)));
  }
  static int isend(void* b, int n, MPI_Datatype t, int peer, int tag, MPI_Comm comm, MPI_Request* r) {
    return MPI_Isend(b, n, t, peer, tag, comm, r);
  }

  // Moves chunk k on as far as its messages allow.
  void advance(size_t k) {
    State& s = states_[k];
    bool done = false;
    if (s.phase == Phase::AwaitPartial) {
      test(c_, s.partial_in, done, job_, w_ - 1);
      if (done) s.phase = Phase::Fold;
    }
    if (s.phase == Phase::Fold) {
      fold(job_, partial_, begin(k), end(k), w_ > 0);
      if (w_ == last_) {
        deliver(job_, partial_, begin(k), end(k));
        if (w_ > 0) post(isend, partial_, k, w_ - 1, 1, s.final_out);
        s.phase = Phase::Drain;
      } else {
        post(isend, partial_, k, w_ + 1, 0, s.partial_out);
        post(MPI_Irecv, result_, k, w_ + 1, 1, s.final_in);
        s.phase = Phase::AwaitFinal;
      }
    }
    if (s.phase == Phase::AwaitFinal) {
      test(c_, s.final_in, done, job_, w_ + 1);
      if (!done) return;
      deliver(job_, result_, begin(k), end(k));
      if (w_ > 0) post(isend, result_, k, w_ - 1, 1, s.final_out);
      s.phase = Phase::Drain;
    }
    if (s.phase == Phase::Drain) {
      bool sent_up = false, sent_down = false;
      test(c_, s.partial_out, sent_up, job_, w_ + 1);
      test(c_, s.final_out, sent_down, job_, w_ - 1);
      if (sent_up && sent_down) s.phase = Phase::Done;
    }
  }

  // No chunk moved: names the first worker this one still waits for if the deadline has passed.
  void wait_a_moment(Clock::time_point deadline) {
    for (const State& s : states_) {
      if (s.phase == Phase::AwaitPartial) return check(c_, job_, w_ - 1, "the partial sum from", deadline);
      if (s.phase == Phase::AwaitFinal) return check(c_, job_, w_ + 1, "the final sum from", deadline);
      if (s.phase == Phase::Drain)  // a completed request is MPI_REQUEST_NULL
        return check(c_, job_, s.partial_out != MPI_REQUEST_NULL ? w_ + 1 : w_ - 1, "the receive of its sum by",
                     deadline);
    }
  }

  MpiHostCommunicator& c_;
  Impl& self_;
  Job& job_;
  const size_t n_;
  const int w_, last_;
  const size_t chunk_;
  std::vector<State> states_;
  float* partial_ = nullptr;  // this worker's scratch: the partial sums
  float* result_ = nullptr;   // local buffer 0: where the final sum arrives (w < last)
};

void MpiHostCommunicator::Impl::chain_all_reduce(MpiHostCommunicator& c, Job& job, Clock::time_point deadline) {
  Chain(c, job).run(deadline);
}

// Fold in process, then MPI's own all-reduce of one buffer per worker (order: the library's).
void MpiHostCommunicator::Impl::fast_all_reduce(MpiHostCommunicator& c, Job& job, Clock::time_point deadline) {
  Impl& self = *c.impl_;
  const size_t n = job.count;
  MIRROR_REQUIRE(n <= static_cast<size_t>(INT_MAX), InvalidArgument, job.what, " of ", n,
                 " floats is more than one MPI call carries");
  if (self.scratch.size() < n) self.scratch.resize(n);
  fold(job, self.scratch.data(), 0, n, false);
  MPI_Request request = MPI_REQUEST_NULL;
  const int status = MPI_Iallreduce(MPI_IN_PLACE, self.scratch.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM,
                                    self.comm, &request);
  if (status != MPI_SUCCESS)
    throw CollectiveError(str(job.what, " #", job.seq, " failed on ", c.describe_worker(c.worker_), ": ", mpi_error_text(status)));
  wait(c, request, job, -1, "the contributions of", deadline);
  deliver(job, self.scratch.data(), 0, n);
}

void MpiHostCommunicator::Impl::broadcast(MpiHostCommunicator& c, Job& job, Clock::time_point deadline) {
  const int root_worker = job.root / c.local_;
  float* src = job.buffers[static_cast<size_t>(root_worker == c.worker_ ? job.root % c.local_ : 0)];
  MIRROR_REQUIRE(job.count <= static_cast<size_t>(INT_MAX), InvalidArgument, "a broadcast of ", job.count,
                 " floats is more than one MPI call carries");
  if (c.workers_ > 1) {
    MPI_Request request = MPI_REQUEST_NULL;
    const int status = MPI_Ibcast(src, static_cast<int>(job.count), MPI_FLOAT, root_worker, c.impl_->comm, &request);
    if (status != MPI_SUCCESS)
      throw CollectiveError(str("broadcast #", job.seq, " failed on ", c.describe_worker(c.worker_), ": ", mpi_error_text(status)));
    wait(c, request, job, root_worker, "the data from", deadline);
  }
  deliver(job, src, 0, job.count);
}

MpiHostCommunicator::MpiHostCommunicator(int local_replicas, CrossWorkerSum order, std::chrono::milliseconds timeout)
    : local_(local_replicas), order_(order), impl_(std::make_unique<Impl>()),
      issued_(static_cast<size_t>(local_replicas), 0) {
  MIRROR_REQUIRE(local_replicas >= 1, InvalidArgument, "a worker needs at least one replica, got ", local_replicas);
  set_timeout(timeout);
  MpiWorld& world = MpiWorld::get();
  world.agree("the number of replicas per worker", std::to_string(local_replicas));
  workers_ = world.size();
  worker_ = world.rank();
  const int status = MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm);
  MIRROR_REQUIRE(status == MPI_SUCCESS, CollectiveError, "MPI_Comm_dup failed: ", mpi_error_text(status));
  MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN);
  progress_ = std::thread([this] { progress_loop(); });
}

MpiHostCommunicator::MpiHostCommunicator(int local_replicas, int workers, int worker, std::string broken_reason)
    : local_(local_replicas), workers_(workers), worker_(worker), impl_(std::make_unique<Impl>()),
      issued_(static_cast<size_t>(local_replicas), 0), failure_(std::move(broken_reason)) {
  failed_ = true;
}

std::unique_ptr<MpiHostCommunicator> MpiHostCommunicator::broken(int local_replicas, int world_size,
                                                                 int first_global_rank, std::string reason) {
  return std::unique_ptr<MpiHostCommunicator>(new MpiHostCommunicator(
      local_replicas, world_size / local_replicas, first_global_rank / local_replicas, std::move(reason)));
}

MpiHostCommunicator::~MpiHostCommunicator() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (progress_.joinable()) progress_.join();
  // Freeing is collective in principle; after a failure the peers may be gone, so leave it.
  if (impl_->comm != MPI_COMM_NULL && !failed_) MPI_Comm_free(&impl_->comm);
}

void MpiHostCommunicator::throw_failure() {
  std::lock_guard lock(mutex_);
  throw CollectiveError(failure_);
}

void MpiHostCommunicator::fail(const std::string& reason) {
  {
    std::lock_guard lock(mutex_);
    if (failed_) return;
    failure_ = reason;
    failed_ = true;
  }
  MpiWorld::mark_failed();
  changed_.notify_all();
}

void MpiHostCommunicator::abort(const std::string& reason) { fail(reason); }

int64_t MpiHostCommunicator::arrive(int rank, Kind kind, std::span<float> data, const char* what, int root) {
  if (failed_) throw_failure();
  std::unique_lock lock(mutex_);
  const int64_t seq = issued_.at(static_cast<size_t>(rank))++;
  Job& job = gathering_[seq];
  if (job.arrived == 0) {
    job = Job{.kind = kind, .what = what, .seq = seq, .count = data.size(), .root = root,
              .buffers = std::vector<float*>(static_cast<size_t>(local_), nullptr)};
  } else if (job.kind != kind || job.count != data.size()) {
    lock.unlock();
    fail(str(what, " #", seq, " on worker ", worker_, ": local rank ", rank, " passed ", data.size(),
             " elements to a ", what, " where another local rank passed ", job.count, " to a ", job.what,
             " (the replicas issued collectives in another order)"));
    throw_failure();
  }
  job.buffers[static_cast<size_t>(rank)] = data.data();
  if (++job.arrived == local_) {
    queue_.push_back(std::move(job));
    gathering_.erase(seq);
    lock.unlock();
    changed_.notify_all();
  }
  return seq;
}

void MpiHostCommunicator::wait_done(int rank, int64_t seq, const char* what) {
  // The progress thread's deadline names the lost worker; this one, a little later, catches a
  // local rank that never arrived.
  const auto deadline = Clock::now() + timeout() + std::chrono::seconds(2);
  std::unique_lock lock(mutex_);
  if (!changed_.wait_until(lock, deadline, [&] { return failed_ || done_ > seq; })) {
    lock.unlock();
    fail(str(what, " #", seq, " timed out after ", timeout().count(), " ms on worker ", worker_, ", local rank ", rank,
             ": another replica of this worker did not join it (it is stuck or issued collectives in another order)"));
  }
  if (failed_) {
    if (lock.owns_lock()) lock.unlock();
    throw_failure();
  }
}

void MpiHostCommunicator::all_reduce_sum_async(int rank, std::span<float> data, const char* what) {
  arrive(rank, Kind::AllReduce, data, what, 0);
}

void MpiHostCommunicator::wait_all(int rank) {
  int64_t last;
  {
    std::lock_guard lock(mutex_);
    last = issued_.at(static_cast<size_t>(rank)) - 1;
  }
  if (last >= 0) wait_done(rank, last, "wait_all");
  else if (failed_) throw_failure();
}

void MpiHostCommunicator::all_reduce_sum(int rank, std::span<float> data, const char* what) {
  wait_done(rank, arrive(rank, Kind::AllReduce, data, what, 0), what);
}

void MpiHostCommunicator::broadcast(int rank, std::span<float> data, int root) {
  MIRROR_REQUIRE(root >= 0 && root < world_size(), InvalidArgument, "broadcast from global rank ", root,
                 " but the world has ", world_size(), " ranks");
  wait_done(rank, arrive(rank, Kind::Broadcast, data, "broadcast", root), "broadcast");
}

void MpiHostCommunicator::barrier(int rank) { wait_done(rank, arrive(rank, Kind::Barrier, {}, "barrier", 0), "barrier"); }

void MpiHostCommunicator::progress_loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || failed_ || !queue_.empty(); });
      if (stopping_ || failed_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      run_job(job);
    } catch (const std::exception& e) {
      fail(e.what());
      return;
    }
    {
      std::lock_guard lock(mutex_);
      done_ = job.seq + 1;
    }
    changed_.notify_all();
  }
}

void MpiHostCommunicator::run_job(Job& job) {
  const auto deadline = Clock::now() + timeout();
  impl_->idle_since = Clock::now();
  switch (job.kind) {
    case Kind::AllReduce:
      if (job.count == 0) return;
      if (order_ == CrossWorkerSum::RankOrder || workers_ == 1) Impl::chain_all_reduce(*this, job, deadline);
      else Impl::fast_all_reduce(*this, job, deadline);
      return;
    case Kind::Broadcast:
      Impl::broadcast(*this, job, deadline);
      return;
    case Kind::Barrier: {
      MPI_Request request = MPI_REQUEST_NULL;
      const int status = MPI_Ibarrier(impl_->comm, &request);
      if (status != MPI_SUCCESS)
        throw CollectiveError(str("barrier #", job.seq, " failed on ", describe_worker(worker_), ": ", mpi_error_text(status)));
      Impl::wait(*this, request, job, -1, "the arrival of", deadline);
      return;
    }
  }
}

}  // namespace mirror
