// libFuzzer target: the IDX reader on arbitrary bytes (plain or gzip). Any DataError is a correct
// answer; a crash, a sanitizer report, a hang or an allocation past libFuzzer's limit is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "mirror/engine/data/dataset.hpp"
#include "mirror/engine/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // read_idx takes a path: one file per process, rewritten for every input.
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("mirror_fuzz_idx_" + std::to_string(::getpid()))).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mirror::data::read_idx(path);
  } catch (const mirror::DataError&) {
  }
  return 0;
}
