// HostStrategy: CPU replicas with an in-process communicator.
#include <algorithm>

#include "mirror/collectives/host_communicator.hpp"
#include "mirror/engine/device.hpp"
#include "mirror/engine/error.hpp"
#include "mirror/engine/host/host_backend.hpp"
#include "mirror/strategy/host_backends.hpp"
#include "mirror/strategy/strategy.hpp"

namespace mirror {

std::vector<std::unique_ptr<Backend>> host_backends(int replicas, int threads) {
  MIRROR_REQUIRE(replicas >= 1, InvalidArgument, "the host strategy needs at least 1 replica, got ", replicas);
  MIRROR_REQUIRE(threads >= 0, InvalidArgument, "thread count must be >= 0 (0 = all cores), got ", threads);
  const int limit = host_thread_limit();
  MIRROR_REQUIRE(replicas <= limit, InvalidArgument, "the host strategy was asked for ", replicas,
                 " replicas, more than its limit of ", limit, " (", kHostThreadsPerHardwareThread,
                 " x this machine's ", host_thread_count(), " hardware threads; each replica needs a thread)");
  MIRROR_REQUIRE(threads <= limit, InvalidArgument, "the host strategy was asked for ", threads,
                 " threads, more than its limit of ", limit, " (", kHostThreadsPerHardwareThread, " x this machine's ",
                 host_thread_count(), " hardware threads): past the cores threads only take turns; use ",
                 host_thread_count(), " or 0 (every hardware thread)");
  const int total = threads > 0 ? threads : host_thread_count();
  std::vector<std::unique_ptr<Backend>> backends;
  for (int r = 0; r < replicas; ++r) {
    // Spread the threads as evenly as possible; oversubscribed replicas get one each.
    const int share = std::max(1, total / replicas + (r < total % replicas ? 1 : 0));
    backends.push_back(make_host_backend(share));
  }
  return backends;
}

HostStrategy::HostStrategy(int replicas, int threads) : Strategy("host", host_backends(replicas, threads)) {
  start();
}

std::unique_ptr<Communicator> HostStrategy::make_communicator() {
  return std::make_unique<HostCommunicator>(num_replicas());
}

}  // namespace mirror
