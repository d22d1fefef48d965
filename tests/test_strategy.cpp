// Strategies: batch splitting, persistent replica threads, failure handling, make_strategy's choice.
#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "mirror/collectives/host_communicator.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/strategy/gpu_strategies.hpp"
#include "mirror/strategy/host_backends.hpp"
#include "mirror/strategy/strategy.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

TEST(Strategy, SplitBatchIsContiguousAndBalanced) {
  for (int replicas : {1, 2, 3, 4}) {
    HostStrategy strategy(replicas, 1);
    for (int64_t rows : {0, 1, 2, 3, 31, 32, 33, 100}) {
      const auto shares = strategy.split_batch(rows);
      ASSERT_EQ(static_cast<int>(shares.size()), replicas);
      int64_t next = 0, smallest = rows, largest = 0;
      for (const auto& s : shares) {
        EXPECT_EQ(s.offset, next);
        next += s.count;
        smallest = std::min(smallest, s.count);
        largest = std::max(largest, s.count);
      }
      EXPECT_EQ(next, rows);
      EXPECT_LE(largest - smallest, 1) << replicas << " replicas, " << rows << " rows";
    }
  }
}

// Worker `worker` of `workers`, each with `replicas` host replicas: what a multi-worker strategy's
// communicator tells the strategy (its collectives stay in process here).
class WorkerOfWorld final : public Strategy {
 public:
  WorkerOfWorld(int worker, int workers, int replicas)
      : Strategy("worker", host_backends(replicas, 1)), worker_(worker), workers_(workers) {
    start();
  }

 protected:
  std::unique_ptr<Communicator> make_communicator() override {
    class Slice final : public Communicator {
     public:
      Slice(int size, int world, int first) : local_(size), world_(world), first_(first) {}
      int size() const override { return local_.size(); }
      int world_size() const override { return world_; }
      int first_global_rank() const override { return first_; }
      void all_reduce_sum(int rank, std::span<float> data, const char* what) override { local_.all_reduce_sum(rank, data, what); }
      void broadcast(int rank, std::span<float> data, int root) override { local_.broadcast(rank, data, root - first_); }
      void barrier(int rank) override { local_.barrier(rank); }
      void abort(const std::string& reason) override { local_.abort(reason); }

     private:
      HostCommunicator local_;
      int world_, first_;
    };
    return std::make_unique<Slice>(num_replicas(), workers_ * num_replicas(), worker_ * num_replicas());
  }

 private:
  int worker_, workers_;
};

TEST(Strategy, WorkersTakeTheirGlobalRanksSharesOfTheGlobalBatch) {
  for (const auto& [workers, replicas] : {std::pair{2, 1}, std::pair{2, 2}, std::pair{3, 2}}) {
    HostStrategy one(workers * replicas, 1);
    for (int64_t rows : {0, 1, 5, 32, 33}) {
      std::vector<BatchShare> joined;
      for (int w = 0; w < workers; ++w) {
        WorkerOfWorld worker(w, workers, replicas);
        EXPECT_EQ(worker.world_replicas(), workers * replicas);
        EXPECT_EQ(worker.first_global_replica(), w * replicas);
        for (const BatchShare& s : worker.split_batch(rows)) joined.push_back(s);
        // Work every worker does whole (predict) is split among its own replicas only.
        int64_t local_rows = 0;
        for (const BatchShare& s : worker.split_batch_in_process(rows)) local_rows += s.count;
        EXPECT_EQ(local_rows, rows);
      }
      EXPECT_EQ(joined, one.split_batch(rows)) << workers << " workers x " << replicas << ", " << rows << " rows";
    }
  }
}

TEST(Strategy, MoreReplicasThanRowsGivesEmptyShares) {
  HostStrategy strategy(3, 1);
  const auto shares = strategy.split_batch(2);
  EXPECT_EQ(shares[0].count, 1);
  EXPECT_EQ(shares[1].count, 1);
  EXPECT_EQ(shares[2].count, 0);
}

TEST(Strategy, RunUsesOnePersistentThreadPerReplica) {
  HostStrategy strategy(3, 1);
  std::mutex mutex;
  std::vector<std::set<std::thread::id>> seen(3);
  for (int step = 0; step < 5; ++step) {
    strategy.run([&](int r) {
      std::lock_guard lock(mutex);
      seen[static_cast<size_t>(r)].insert(std::this_thread::get_id());
    });
  }
  std::set<std::thread::id> all;
  for (const auto& s : seen) {
    EXPECT_EQ(s.size(), 1u);  // the same thread every step
    all.insert(s.begin(), s.end());
  }
  EXPECT_EQ(all.size(), 3u);  // a different thread per replica
  EXPECT_EQ(all.count(std::this_thread::get_id()), 0u);
}

TEST(Strategy, AFailingReplicaNeverHangsTheOthersAndTheStrategyRecovers) {
  HostStrategy strategy(3, 1);
  try {
    strategy.run([&](int r) {
      if (r == 1) throw DataError("replica 1 read a bad label");
      std::vector<float> data(16, 1.0f);
      strategy.communicator().all_reduce_sum(r, data);  // would wait for replica 1 forever
    });
    FAIL() << "expected the replica's error";
  } catch (const DataError& e) {
    EXPECT_STREQ(e.what(), "replica 1 read a bad label");  // the root cause, not the abort
  }
  std::vector<std::vector<float>> data(3, std::vector<float>(16, 1.0f));
  strategy.run([&](int r) { strategy.communicator().all_reduce_sum(r, data[static_cast<size_t>(r)]); });
  for (const auto& d : data) EXPECT_EQ(d[0], 3.0f);
}

TEST(Strategy, OneThreadUsesItAtATimeAndMayTakeItAgain) {
  HostStrategy strategy(2, 1);
  std::optional<Strategy::Use> fit(strategy.use("fit"));
  { const Strategy::Use nested = strategy.use("evaluate"); }  // the same thread: a callback inside fit
  std::string refused;  // still held by `fit`: the nested Use's end did not release it
  std::thread other([&] {
    try {
      const Strategy::Use use = strategy.use("predict");
    } catch (const InvalidArgument& e) {
      refused = e.what();
    }
  });
  other.join();
  EXPECT_NE(refused.find("cannot predict() on the host strategy: another thread's fit() is running on it"),
            std::string::npos)
      << refused;
  fit.reset();  // the outermost Use releases it
  std::thread after([&] { EXPECT_NO_THROW(const Strategy::Use use = strategy.use("predict")); });
  after.join();
}

TEST(Strategy, ItsLifetimeExpiresWithIt) {
  std::weak_ptr<const void> lifetime;
  {
    HostStrategy strategy(1, 1);
    lifetime = strategy.lifetime();
    EXPECT_FALSE(lifetime.expired());
  }
  EXPECT_TRUE(lifetime.expired());
}

TEST(Strategy, HostReplicasShareTheThreads) {
  HostStrategy strategy(2, 4);
  EXPECT_EQ(strategy.num_replicas(), 2);
  EXPECT_EQ(strategy.name(), "host");
  EXPECT_EQ(strategy.devices().size(), 2u);
  EXPECT_EQ(strategy.device(0).kind, DeviceKind::CPU);
  EXPECT_THROW(HostStrategy(0), InvalidArgument);
}

// Threads and replicas are bounded by 4x the hardware threads: up to the limit a strategy is made,
// one past it is refused with a message that names the count and the limit.
TEST(Strategy, HostThreadsAndReplicasAreBounded) {
  const int limit = host_thread_limit();
  EXPECT_EQ(limit, kHostThreadsPerHardwareThread * host_thread_count());
  EXPECT_EQ(HostStrategy(1, limit).num_replicas(), 1);
  EXPECT_EQ(HostStrategy(limit, limit).num_replicas(), limit);
  const auto refusal = [](int replicas, int threads) {
    try {
      HostStrategy strategy(replicas, threads);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const std::string too_many_threads = refusal(1, limit + 1);
  EXPECT_NE(too_many_threads.find(str(limit + 1, " threads, more than its limit of ", limit)), std::string::npos)
      << too_many_threads;
  const std::string too_many_replicas = refusal(limit + 1, 0);
  EXPECT_NE(too_many_replicas.find(str(limit + 1, " replicas, more than its limit of ", limit)), std::string::npos)
      << too_many_replicas;
  EXPECT_NE(refusal(1, 70000), "no exception");
}

// These run on machines without a GPU (CI) and check the announced fallback; with a GPU the
// choice differs, so they say so and skip.
bool has_gpu() { return !list_physical_devices(DeviceKind::GPU).empty(); }

std::vector<Device> fake_gpus(int count) {
  std::vector<Device> gpus;
  for (int i = 0; i < count; ++i) {
    Device d;
    d.kind = DeviceKind::GPU;
    d.index = i;
    gpus.push_back(d);
  }
  return gpus;
}

std::vector<int> indices(const std::vector<Device>& devices) {
  std::vector<int> out;
  for (const Device& d : devices) out.push_back(d.index);
  return out;
}

TEST(GpusOfWorker, WorkersSharingAMachineSplitItsGpus) {
  testing::ScopedEnv visible("CUDA_VISIBLE_DEVICES", std::nullopt);
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(4), 0, 1)), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(4), 0, 2)), (std::vector<int>{0, 1}));
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(4), 1, 2)), (std::vector<int>{2, 3}));
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(8), 3, 4)), (std::vector<int>{6, 7}));
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(3), 1, 2)), (std::vector<int>{1}));  // GPU 2 stays idle
  const std::string message = testing::message_of<DeviceError>([] { gpus_of_worker(fake_gpus(1), 1, 2); });
  EXPECT_NE(message.find("2 workers share this machine but 1 GPU(s) are visible"), std::string::npos) << message;
  EXPECT_THROW(gpus_of_worker(fake_gpus(2), 2, 2), InvalidArgument);
}

TEST(GpusOfWorker, CudaVisibleDevicesGivesEachWorkerItsOwn) {
  testing::ScopedEnv visible("CUDA_VISIBLE_DEVICES", "3");
  EXPECT_EQ(indices(gpus_of_worker(fake_gpus(1), 1, 2)), (std::vector<int>{0}));
}

TEST(MakeStrategy, FallsBackToTheHostAndSaysWhy) {
  if (has_gpu()) GTEST_SKIP() << "a GPU is present; the fallback is not taken";
  std::ostringstream log;
  auto strategy = make_strategy({.host_replicas = 2, .log = &log});
  EXPECT_EQ(strategy->name(), "host");
  EXPECT_EQ(strategy->num_replicas(), 2);
  EXPECT_NE(log.str().find("host strategy"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find(gpu_unavailable_reason()), std::string::npos) << log.str();
}

TEST(MakeStrategy, RequiredGpuIsAnErrorWithTheReason) {
  if (has_gpu()) GTEST_SKIP() << "a GPU is present; nothing to refuse";
  std::ostringstream log;
  try {
    make_strategy({.require_gpu = true, .log = &log});
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("a GPU is required"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(gpu_unavailable_reason()), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_strategy({.kind = "one-device", .log = &log}), DeviceError);
  EXPECT_THROW(make_strategy({.kind = "mirrored", .log = &log}), DeviceError);
  setenv("MIRROR_REQUIRE_GPU", "1", 1);
  EXPECT_THROW(make_strategy({.log = &log}), DeviceError);
  unsetenv("MIRROR_REQUIRE_GPU");
}

// Sets MIRROR_REQUIRE_GPU for one scope and unsets it after, even when an expectation fails.
struct RequireGpuVariable {
  explicit RequireGpuVariable(const char* value) { setenv("MIRROR_REQUIRE_GPU", value, 1); }
  ~RequireGpuVariable() { unsetenv("MIRROR_REQUIRE_GPU"); }
};

// The host strategy tells the settings apart on any machine: it is refused only when a GPU is required.
TEST(MakeStrategy, RequireGpuVariableReadsAsASwitch) {
  std::ostringstream log;
  for (const char* on : {"1", "true", "Yes", "ON"}) {
    RequireGpuVariable variable(on);
    try {
      make_strategy({.kind = "host", .log = &log});
      ADD_FAILURE() << "MIRROR_REQUIRE_GPU=" << on << " should require a GPU";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("a GPU is required (MIRROR_REQUIRE_GPU is set)"), std::string::npos)
          << e.what();
    }
  }
  for (const char* off : {"0", "false", "No", "OFF", ""}) {
    RequireGpuVariable variable(off);
    EXPECT_EQ(make_strategy({.kind = "host", .log = &log})->name(), "host") << "MIRROR_REQUIRE_GPU=" << off;
  }
  RequireGpuVariable variable("maybe");
  try {
    make_strategy({.kind = "host", .log = &log});
    FAIL() << "MIRROR_REQUIRE_GPU=maybe should be refused";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("MIRROR_REQUIRE_GPU='maybe'"), std::string::npos) << e.what();
  }
}

TEST(MakeStrategy, WarnsOnceWhenHostThreadsExceedTheCores) {
  const int cores = host_thread_count();
  std::ostringstream fitting;
  make_strategy({.kind = "host", .host_threads = cores, .log = &fitting});
  EXPECT_EQ(fitting.str().find("warning"), std::string::npos) << fitting.str();
  std::ostringstream over;
  make_strategy({.kind = "host", .host_threads = cores + 1, .log = &over});
  const std::string text = over.str();
  const std::string expected = str(cores + 1, " host threads were asked for but this machine has ", cores);
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_EQ(text.find("warning"), text.rfind("warning")) << text;
}

TEST(MakeStrategy, UnknownKindIsAnInvalidArgument) {
  EXPECT_THROW(make_strategy({.kind = "tpu"}), InvalidArgument);
}

TEST(MakeStrategy, HostOnRequest) {
  std::ostringstream log;
  auto strategy = make_strategy({.kind = "host", .log = &log});
  EXPECT_EQ(strategy->name(), "host");
  EXPECT_NE(log.str().find("asked for"), std::string::npos);
}

}  // namespace
}  // namespace mirror
