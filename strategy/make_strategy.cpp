// make_strategy(): choose a strategy for this machine and say which and why. The GPU is never left
// silently: the host fallback is announced with the reason no GPU was found, and can be forbidden.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/device.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/strategy/gpu_strategies.hpp"
#include "mirror/strategy/strategy.hpp"
#ifdef MIRROR_WITH_MPI
#include "mirror/strategy/multi_worker_strategy.hpp"
#endif

namespace mirror {
namespace {

// MIRROR_REQUIRE_GPU as a switch: 1/true/yes/on set it, 0/false/no/off or empty (or unset) do not,
// in any case. Anything else is refused rather than guessed at.
bool env_requires_gpu() {
  const char* v = std::getenv("MIRROR_REQUIRE_GPU");
  if (v == nullptr) return false;
  std::string value = v;
  std::transform(value.begin(), value.end(), value.begin(), [](unsigned char c) { return std::tolower(c); });
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value.empty() || value == "0" || value == "false" || value == "no" || value == "off") return false;
  throw InvalidArgument(str("MIRROR_REQUIRE_GPU='", v, "' is neither on (1, true, yes, on) nor off (0, false, no, off, ",
                            "empty)"));
}

std::vector<Device> selected_gpus(const StrategyOptions& options, std::string& why_none) {
  std::vector<Device> all = list_physical_devices(DeviceKind::GPU);
  why_none = gpu_unavailable_reason();
  if (options.gpu_indices.empty()) return all;
  std::vector<Device> chosen;
  for (int index : options.gpu_indices) {
    MIRROR_REQUIRE(index >= 0 && index < static_cast<int>(all.size()), DeviceError, "GPU ", index,
                   " was asked for but ", all.size(), " GPU(s) are visible",
                   all.empty() ? ": " + why_none : std::string(" (CUDA_VISIBLE_DEVICES renumbers them from 0)"));
    chosen.push_back(all[static_cast<size_t>(index)]);
  }
  return chosen;
}

std::string why_required() {
  return env_requires_gpu() ? "MIRROR_REQUIRE_GPU is set" : "require_gpu is set";
}

std::unique_ptr<Strategy> host_fallback(const StrategyOptions& options, const std::string& because) {
  auto strategy = std::make_unique<HostStrategy>(options.host_replicas, options.host_threads);
  *options.log << "Mirror: using the " << strategy->describe() << " because " << because << '\n';
  // Allowed (a test may want it), but threads beyond the cores take turns and each step waits for
  // the slowest of them, so such runs are many times slower; say so once.
  if (options.host_threads > host_thread_count()) {
    *options.log << "Mirror: warning: " << options.host_threads << " host threads were asked for but this machine has "
                 << host_thread_count() << " hardware threads; training will be slower than with "
                 << host_thread_count() << " or fewer\n";
  }
  return strategy;
}

#ifdef MIRROR_WITH_MPI
// This worker's place among the workers that share its machine (by host name): (rank, count).
std::pair<int, int> place_on_machine() {
  const MpiWorld& world = MpiWorld::get();
  const std::vector<std::string> hosts = world.all_gather(world.host(), "the workers' host names");
  int rank = 0, count = 0;
  for (int w = 0; w < world.size(); ++w)
    if (hosts[static_cast<size_t>(w)] == world.host()) {
      if (w < world.rank()) ++rank;
      ++count;
    }
  return {rank, count};
}
#endif

std::unique_ptr<Strategy> multi_worker(const StrategyOptions& options, const LaunchInfo& launch, bool required) {
#ifdef MIRROR_WITH_MPI
  MultiWorkerMirroredStrategy::Options o{
      .replicas_per_worker = options.host_replicas,
      .threads = options.host_threads,
      .order = options.rank_order_sums ? CrossWorkerSum::RankOrder : CrossWorkerSum::Fast,
      .collective_timeout = options.collective_timeout_ms > 0 ? std::chrono::milliseconds(options.collective_timeout_ms)
                                                              : kDefaultCollectiveTimeout};
  // Each worker takes its GPUs (every worker must find some, or none: the strategy checks), one
  // replica each; without GPUs, host replicas.
  std::string why_none;
  const std::vector<Device> visible = selected_gpus(options, why_none);
  MIRROR_REQUIRE(!required || !visible.empty(), DeviceError, "a GPU is required (", why_required(), ") but none is ",
                 "usable on worker ", MpiWorld::get().rank(), ": ", why_none);
  if (!visible.empty()) {
    MIRROR_REQUIRE(options.replicas_per_gpu == 1, InvalidArgument, "the multi-worker strategy runs one replica per GPU ",
                   "(NCCL across workers takes one rank per GPU), not ", options.replicas_per_gpu);
    const auto [local_rank, local_size] = place_on_machine();
    o.gpus = options.gpu_indices.empty() ? gpus_of_worker(visible, local_rank, local_size) : visible;
  }
  auto strategy = std::make_unique<MultiWorkerMirroredStrategy>(o);
  if (strategy->is_chief()) {
    std::string why = launch.launched ? str(launch.launcher, " launched ", strategy->num_workers(), " workers")
                                      : std::string("it was asked for");
    *options.log << "Mirror: using the " << strategy->describe() << ", sums across workers "
                 << (!o.gpus.empty()          ? "by NCCL"
                     : options.rank_order_sums ? "in rank order (bitwise those of one process)"
                                               : "in MPI's order")
                 << ", because " << why << (o.gpus.empty() ? "; no GPU: " + why_none : std::string()) << '\n';
  }
  return strategy;
#else
  (void)launch;
  (void)required;
  MpiWorld::get();  // throws, saying how to build with MPI
  throw InvalidArgument(str("the multi-worker strategy needs MPI (", options.kind, ")"));
#endif
}

}  // namespace

std::unique_ptr<Strategy> make_strategy(const StrategyOptions& given) {
  StrategyOptions options = given;
  if (!options.log) options.log = &std::cerr;
  const bool required = options.require_gpu || env_requires_gpu();
  const std::string& kind = options.kind;
  MIRROR_REQUIRE(kind == "auto" || kind == "host" || kind == "one-device" || kind == "mirrored" || kind == "multi-worker",
                 InvalidArgument, "unknown strategy '", kind, "': expected auto, host, one-device, mirrored or multi-worker");
  const LaunchInfo launch = detect_launch();
  if (kind == "multi-worker" || (kind == "auto" && launch.launched && launch.size > 1))
    return multi_worker(options, launch, required);

  if (kind == "host") {
    MIRROR_REQUIRE(!required, InvalidArgument, "a GPU is required (", why_required(), ") but the host strategy was asked for");
    return host_fallback(options, "it was asked for");
  }

  std::string why_none;
  const std::vector<Device> gpus = selected_gpus(options, why_none);
  if (gpus.empty()) {
    MIRROR_REQUIRE(kind == "auto", DeviceError, "the ", kind, " strategy needs a GPU, but none is usable: ", why_none);
    MIRROR_REQUIRE(!required, DeviceError, "a GPU is required (", why_required(), ") but none is usable: ", why_none);
    return host_fallback(options, "no GPU is usable: " + why_none);
  }

  std::unique_ptr<Strategy> strategy;
  std::string why;
  if (kind == "one-device" || (kind == "auto" && gpus.size() == 1 && options.replicas_per_gpu == 1)) {
    strategy = std::make_unique<OneDeviceStrategy>(gpus[0]);
    why = kind == "auto" ? "one GPU is visible" : "it was asked for";
  } else {
    strategy = std::make_unique<MirroredStrategy>(gpus, options.replicas_per_gpu);
    why = kind == "auto" ? str(gpus.size(), " GPUs are visible") : "it was asked for";
  }
  *options.log << "Mirror: using the " << strategy->describe() << " because " << why << '\n';
  return strategy;
}

}  // namespace mirror
