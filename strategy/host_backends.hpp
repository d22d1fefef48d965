// The host backends of a strategy's CPU replicas (HostStrategy, MultiWorkerMirroredStrategy).
#pragma once

#include <memory>
#include <vector>

#include "mirror/engine/backend.hpp"

namespace mirror {

// `replicas` host backends sharing `threads` (0 = every hardware thread) as evenly as possible;
// oversubscribed replicas get one thread each.
std::vector<std::unique_ptr<Backend>> host_backends(int replicas, int threads);

}  // namespace mirror
