// The instruction sets Mirror's own host loops are compiled for, and which one runs. A hot loop is
// compiled once per instruction set (baseline x86-64, AVX2, AVX-512) and the variant is picked
// when it runs: the CPU's best, or a lower one that a test or MIRROR_HOST_ISA asks for, so every
// variant the CPU can execute is tested on it. The variants give the same bits: the build
// forbids contracting a*b+c into a fused multiply-add (-ffp-contract=off, checked on the built
// library by tests/test_no_fma.sh), and the loops have no reductions a vector width could reorder.
#pragma once

#include <span>
#include <string_view>

namespace mirror::host {

enum class CpuIsa { Baseline, Avx2, Avx512 };

std::string_view to_string(CpuIsa isa);

// The variants this build has, lowest first: all three in a portable GCC build on x86-64; only
// Baseline where the compiler targets AVX2 already (-Dnative_arch=true) or is not GCC (clang does
// not compile the variants; the fuzz build uses it).
std::span<const CpuIsa> compiled_isas();

// Whether this CPU (and its operating system) can execute `isa`'s variant.
bool cpu_supports(CpuIsa isa);

// The variant the hot loops run now. Starts as the best variant this CPU supports, capped by the
// environment variable MIRROR_HOST_ISA (baseline, avx2 or avx512) when it is set; an unknown name
// is an InvalidArgument at the first call.
CpuIsa active_isa();

// Makes `isa` the active variant for every host backend of the process (tests; a user comparing
// runs). InvalidArgument when the build lacks that variant or the CPU cannot run it.
void set_active_isa(CpuIsa isa);

// Runs fn() compiled for the active instruction set. `fn` and everything it calls must be inlined
// into the variant: write the loop in a lambda marked MIRROR_ALWAYS_INLINE and its helpers
// [[gnu::always_inline]], since a call leaves the variant for baseline code. Do not put an OpenMP
// region inside: GCC outlines a region's body before inlining, so it would stay baseline; call
// hot_loop from inside the region instead.
#define MIRROR_ALWAYS_INLINE __attribute__((always_inline))

#if defined(__x86_64__) && !defined(__AVX2__) && defined(__GNUC__) && !defined(__clang__)
#define MIRROR_HOST_ISA_VARIANTS 1
template <class Fn>
[[gnu::target("avx512f"), gnu::noinline]] void run_avx512(const Fn& fn) {
  fn();
}
template <class Fn>
[[gnu::target("avx2"), gnu::noinline]] void run_avx2(const Fn& fn) {
  fn();
}
#else
#define MIRROR_HOST_ISA_VARIANTS 0
#endif

template <class Fn>
void hot_loop(const Fn& fn) {
#if MIRROR_HOST_ISA_VARIANTS
  switch (active_isa()) {
    case CpuIsa::Avx512: return run_avx512(fn);
    case CpuIsa::Avx2: return run_avx2(fn);
    case CpuIsa::Baseline: break;
  }
#endif
  fn();
}

}  // namespace mirror::host
