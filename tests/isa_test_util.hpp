// Runs a test body once per instruction-set variant of the host's hot loops that this CPU can
// execute (engine/host/cpu_isa.hpp), so every variant is tested wherever the suite runs, whatever
// the CPU the suite happens to have picks by default. Variants the CPU cannot execute are named
// on stdout; tests/test_no_fma.sh covers them on the built library.
#pragma once

#include <gtest/gtest.h>

#include <iostream>
#include <vector>

#include "mirror/engine/host/cpu_isa.hpp"

namespace mirror::testing {

// Restores the active variant when it goes out of scope.
class ScopedIsa {
 public:
  explicit ScopedIsa(host::CpuIsa isa) : saved_(host::active_isa()) { host::set_active_isa(isa); }
  ~ScopedIsa() { host::set_active_isa(saved_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  host::CpuIsa saved_;
};

inline std::vector<host::CpuIsa> runnable_isas() {
  std::vector<host::CpuIsa> runnable;
  for (host::CpuIsa isa : host::compiled_isas()) {
    if (host::cpu_supports(isa)) {
      runnable.push_back(isa);
    } else {
      std::cout << "this CPU cannot run the " << host::to_string(isa)
                << " variant of the host loops: not run here (tests/test_no_fma.sh checks its instructions)\n";
    }
  }
  return runnable;
}

// body() once per runnable variant, that variant active, with a trace naming it.
template <class Fn>
void for_each_runnable_isa(const Fn& body) {
  for (host::CpuIsa isa : runnable_isas()) {
    SCOPED_TRACE(::testing::Message() << "host-loop variant " << host::to_string(isa));
    ScopedIsa scoped(isa);
    body(isa);
  }
}

}  // namespace mirror::testing
