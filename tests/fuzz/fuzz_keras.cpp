// libFuzzer target: the .keras reader (zip, JSON config, the graph built from it, HDF5 weights) on
// arbitrary bytes. DataError is a correct answer; anything else a finding.
#include <cstdint>

#include "mirror/mirror.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mirror::saving::model_from_archive({data, size}, "fuzz.keras");
  } catch (const mirror::DataError&) {
  }
  return 0;
}
