// The host backend: oneDNN for convolution and GEMM, C++ (engine/elementwise.hpp) for the rest.
#pragma once

#include <memory>

#include "mirror/engine/backend.hpp"

namespace mirror {

// A backend on the CPU whose parallel regions use `threads` threads (at least 1). Use one
// instance per replica; oneDNN primitives are created once per geometry and reused.
std::unique_ptr<Backend> make_host_backend(int threads);

}  // namespace mirror
