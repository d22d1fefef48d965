// Strategy: where a model's replicas live and how a step runs on all of them. A strategy owns one
// backend, one worker thread and (through the model) one copy of every variable per replica, and
// the communicator that keeps the copies identical. Model code talks to replicas only through this
// interface and the communicator, never assuming one replica's memory is visible to another.
//
// One model's fit, evaluate or predict at a time: the replicas' worker threads and communicator
// carry one sequence of steps, so two models sharing a strategy from two threads would interleave
// their collectives. A second thread's call is refused with InvalidArgument (not queued); give each
// thread its own strategy. A model must not outlive its strategy's use: once the strategy is
// destroyed, the models compiled with it refuse every call until compiled again with a live one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mirror/collectives/communicator.hpp"
#include "mirror/engine/backend.hpp"
#include "mirror/engine/function_ref.hpp"
#include "mirror/engine/trace.hpp"
#include "mirror/strategy/replica_workers.hpp"

namespace mirror {

// A replica's contiguous share of a global batch: rows [offset, offset + count).
struct BatchShare {
  int64_t offset = 0;
  int64_t count = 0;
  friend bool operator==(const BatchShare&, const BatchShare&) = default;
};

// Points of a replica's training step that a profiler can time: host clock, so on a GPU the time
// the work was queued, not when it ran.
enum class StepPhase { BackwardBegin, BackwardEnd };

class Strategy {
 public:
  virtual ~Strategy();
  Strategy(const Strategy&) = delete;
  Strategy& operator=(const Strategy&) = delete;

  // "host", "one-device", "mirrored" or "multi-worker".
  const std::string& name() const { return name_; }
  // Replicas of this process (worker); their global ranks start at first_global_replica().
  int num_replicas() const { return static_cast<int>(backends_.size()); }
  // Replicas of every worker; == num_replicas() unless the strategy spans processes.
  int world_replicas() const { return communicator_->world_size(); }
  int first_global_replica() const { return communicator_->first_global_rank(); }
  // Whether this process is the chief (worker 0), the one that prints progress and writes files.
  virtual bool is_chief() const { return true; }
  // Throws InvalidArgument naming both values when another worker has a different `value` for
  // `what` (e.g. "the batch size"). Collective across workers; does nothing in one process.
  virtual void check_agreement(const std::string& /*what*/, const std::string& /*value*/) const {}
  // Only from replica `replica`'s own worker thread (inside run()) once training has started.
  Backend& backend(int replica) { return *backends_.at(static_cast<size_t>(replica)); }
  const Device& device(int replica) const { return backends_.at(static_cast<size_t>(replica))->device(); }
  // The device of every replica, in replica order (a device repeats with logical replicas).
  std::vector<Device> devices() const;
  Communicator& communicator() { return *communicator_; }

  // Runs fn(replica) on every replica's worker thread and waits for all. If one replica throws,
  // the communicator is aborted so the others cannot hang in a collective, a fresh communicator
  // replaces it, and the root-cause exception is rethrown here. Allocates nothing (a step calls it).
  void run(FunctionRef<void(int replica)> fn);

  // Splits a global batch of `rows` into world_replicas() contiguous shares in global rank order,
  // whose sizes differ by at most one (the first rows % n shares get the extra row), and returns
  // this process's replica `replica`'s one (its offset into the global batch); it may be empty.
  BatchShare batch_share(int64_t rows, int replica) const;
  // The same split over this process's replicas only: for work every worker does whole (predict).
  BatchShare batch_share_in_process(int64_t rows, int replica) const;
  // batch_share (or batch_share_in_process) of every replica of this process, in replica order.
  std::vector<BatchShare> split_batch(int64_t rows) const;
  std::vector<BatchShare> split_batch_in_process(int64_t rows) const;

  // One line: the strategy, its replicas and their devices.
  std::string describe() const;

  // The spans of the replicas' steps (FitOptions::trace). Lane compute_lane(r) is replica r's
  // stream, communication_lane(r) its collectives'; each is written only by replica r's worker.
  Tracer& tracer() { return tracer_; }
  static int compute_lane(int replica) { return 2 * replica; }
  static int communication_lane(int replica) { return 2 * replica + 1; }
  // Starts the tracer on every replica's two lanes, named by global replica and device. A
  // replica whose backend has a device clock (a GPU) has its compute lane timed on its stream;
  // the collectives' lane keeps host times (launch to the host seeing completion).
  void start_tracing(size_t spans_per_lane);

  // Called on replica `replica`'s worker thread when its backward pass begins and ends, every
  // training step (the gradient buckets' all-reduces start in between). Does nothing; a benchmark
  // overrides it to see how much of the all-reduce the backward pass hides.
  virtual void step_phase(int /*replica*/, StepPhase /*phase*/) {}

  // Held by a model for the length of one fit / evaluate / predict (or weights transfer). The
  // thread holding it may take it again (a callback inside fit may evaluate or read weights).
  class [[nodiscard]] Use {
   public:
    Use(Use&& other) noexcept : strategy_(std::exchange(other.strategy_, nullptr)) {}
    Use& operator=(Use&&) = delete;
    ~Use();

   private:
    friend class Strategy;
    explicit Use(Strategy* strategy) : strategy_(strategy) {}
    Strategy* strategy_;  // null for a nested Use: the outermost one releases the strategy
  };
  // Takes the strategy for `what` ("fit", ...). Throws InvalidArgument, naming the strategy and the
  // call in progress, when another thread holds it.
  Use use(const char* what);
  // Expires when the strategy is destroyed: a model keeps it to refuse work instead of hanging.
  std::weak_ptr<const void> lifetime() const { return alive_; }
  // Runs `release` when the strategy is destroyed, before its backends are: how an object holding
  // memory of this strategy's replicas (a compiled model's runtime) frees it while the backends
  // that allocated it still exist. One per owner; forget(owner) takes it back (the owner is
  // destroyed first, or moves to another strategy). Not thread-safe: call from the thread that
  // compiles and destroys.
  void on_destroy(const void* owner, std::function<void()> release);
  void forget(const void* owner);

 protected:
  Strategy(std::string name, std::vector<std::unique_ptr<Backend>> backends);
  // Called by the derived constructor once it can make communicators.
  void start();
  virtual std::unique_ptr<Communicator> make_communicator() = 0;

 private:
  std::string name_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::unique_ptr<Communicator> communicator_;
  std::shared_ptr<const void> alive_ = std::make_shared<const char>(0);
  std::vector<std::pair<const void*, std::function<void()>>> releases_;  // on_destroy's, run by ~Strategy
  Tracer tracer_;
  std::vector<std::unique_ptr<DeviceClock>> device_clocks_;  // of the GPU replicas' compute lanes
  std::mutex use_mutex_;
  std::thread::id user_;              // the thread holding a Use (none when idle); under use_mutex_
  const char* user_what_ = nullptr;   // and what it is running
  std::unique_ptr<ReplicaWorkers> workers_;  // declared last: stopped before the rest is destroyed
};

// Replicas on the CPU, reduced in process. Several replicas exercise the same split / mirror /
// all-reduce / update path as several GPUs; each gets an equal share of `threads` (0 = every
// hardware thread), at least one. Throws InvalidArgument when `replicas` or `threads` is above
// host_thread_limit() (4 x the hardware threads).
class HostStrategy final : public Strategy {
 public:
  explicit HostStrategy(int replicas = 1, int threads = 0);

 protected:
  std::unique_ptr<Communicator> make_communicator() override;
};

// How long a collective across workers waits for another worker before the job fails. A healthy
// run's longest gap between two collectives is a worker doing alone what the others wait for at
// their next collective: the chief writing a backup (a ResNet-50 with Adam: 300 MB) or its trace;
// every worker loads the data, builds the model, takes its first step and evaluates together. Two
// minutes leave those a wide margin and end a job with a stopped worker while a person still waits.
inline constexpr std::chrono::milliseconds kDefaultCollectiveTimeout = std::chrono::minutes(2);

struct StrategyOptions {
  // "auto" (multi-worker when launched as several processes by mpirun or srun; else mirrored with
  // >= 2 GPUs, one-device with 1, host with none), "host", "one-device", "mirrored", "multi-worker".
  std::string kind = "auto";
  // Make the absence of a usable GPU an error instead of a host fallback. MIRROR_REQUIRE_GPU=1 (or
  // true, yes, on) in the environment does the same; 0, false, no, off or empty leave it off, and any
  // other value is an InvalidArgument.
  bool require_gpu = false;
  int host_replicas = 1;           // host and multi-worker strategies: replicas (per worker)
  int host_threads = 0;            // host strategy: threads in all (0 = every hardware thread)
  std::vector<int> gpu_indices = {};  // GPUs to use (empty = all visible)
  int replicas_per_gpu = 1;        // logical replicas on each GPU
  std::ostream* log = nullptr;     // where the choice is announced (nullptr = std::cerr)
  // Multi-worker: sums across workers in global rank order, bitwise those of one process (true),
  // or in MPI's order (false); how long a collective may wait for another worker (0 =
  // kDefaultCollectiveTimeout).
  bool rank_order_sums = true;
  int64_t collective_timeout_ms = 0;
};

// Picks a strategy for this machine (and, under mpirun or srun, joins the other workers), prints
// which one and why (a multi-worker job: the chief only) (and a warning when the host strategy
// is asked for more threads than the machine has), and returns it. Throws DeviceError
// when a GPU is required (or a GPU strategy asked for) but none is usable, saying why.
std::unique_ptr<Strategy> make_strategy(const StrategyOptions& options = {});

}  // namespace mirror
