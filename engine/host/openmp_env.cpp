// libmirror_openmp_env: bounds how long GNU OpenMP's threads spin before they sleep, for Mirror's
// parallel loops and oneDNN's alike. Its constructor runs before libgomp's, which reads the
// environment once (see top-level meson.build for why this library is linked last).
#include <cstdlib>

namespace {

// libgomp's default (neither variable set) spins ~300,000 iterations, about 3 ms, at every barrier
// and wait. On a machine whose cores are busy with other work a spinning thread holds the core the
// thread it waits for needs; a 2-thread step then ran 35x slower than on 1 thread. 10,000
// iterations is about 0.1 ms (libgomp counts ~100,000 per ms): long enough to catch the next
// parallel region of a step on an idle machine, short enough to yield a busy one.
constexpr const char* kSpinCount = "10000";

__attribute__((constructor)) void bound_openmp_spin() {
  // A user's own choice wins: OMP_WAIT_POLICY (active or passive) or an explicit GOMP_SPINCOUNT.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr)
    setenv("GOMP_SPINCOUNT", kSpinCount, 0);
}

}  // namespace
