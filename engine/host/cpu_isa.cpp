// Which instruction-set variant of the host's hot loops runs (see cpu_isa.hpp).
#include "mirror/engine/host/cpu_isa.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "mirror/engine/error.hpp"

namespace mirror::host {
namespace {

#if MIRROR_HOST_ISA_VARIANTS
constexpr CpuIsa kCompiled[] = {CpuIsa::Baseline, CpuIsa::Avx2, CpuIsa::Avx512};
#else
constexpr CpuIsa kCompiled[] = {CpuIsa::Baseline};
#endif

CpuIsa best_supported() {
  CpuIsa best = CpuIsa::Baseline;
  for (CpuIsa isa : kCompiled)
    if (cpu_supports(isa)) best = isa;
  return best;
}

CpuIsa parse_isa(std::string_view name) {
  for (CpuIsa isa : {CpuIsa::Baseline, CpuIsa::Avx2, CpuIsa::Avx512})
    if (name == to_string(isa)) return isa;
  throw InvalidArgument(str("MIRROR_HOST_ISA is '", name, "': use baseline, avx2 or avx512 (or leave it unset for ",
                            "the best variant this CPU runs)"));
}

// The environment is read once; an unknown name throws at every call until it is fixed, so the
// first host backend made reports it.
CpuIsa initial_isa() {
  const CpuIsa best = best_supported();
  const char* name = std::getenv("MIRROR_HOST_ISA");
  if (!name || !*name) return best;
  return std::min(parse_isa(name), best);
}

std::atomic<CpuIsa>& active() {
  static std::atomic<CpuIsa> isa{initial_isa()};
  return isa;
}

}  // namespace

std::string_view to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Baseline: return "baseline";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "unknown";
}

std::span<const CpuIsa> compiled_isas() { return kCompiled; }

bool cpu_supports(CpuIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (isa) {
    case CpuIsa::Baseline: return true;
    case CpuIsa::Avx2: return __builtin_cpu_supports("avx2");
    case CpuIsa::Avx512: return __builtin_cpu_supports("avx512f");
  }
  return false;
#else
  return isa == CpuIsa::Baseline;
#endif
}

CpuIsa active_isa() { return active().load(std::memory_order_relaxed); }

void set_active_isa(CpuIsa isa) {
  MIRROR_REQUIRE(std::find(std::begin(kCompiled), std::end(kCompiled), isa) != std::end(kCompiled), InvalidArgument,
                 "this build of Mirror has no ", to_string(isa), " variant of its host loops");
  MIRROR_REQUIRE(cpu_supports(isa), InvalidArgument, "this CPU cannot run the ", to_string(isa),
                 " variant of Mirror's host loops");
  active().store(isa, std::memory_order_relaxed);
}

}  // namespace mirror::host
