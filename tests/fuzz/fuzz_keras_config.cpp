// libFuzzer target: config.json alone (JSON, then the graph built from it). The .keras target
// reaches it only through zip's CRC checks, which reject nearly every mutation; this one mutates
// the JSON directly. DataError is a correct answer; anything else a finding.
#include <cstdint>

#include "mirror/mirror.hpp"
#include "mirror/model/saving/keras_format.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json config = nlohmann::json::parse(data, data + size, nullptr, false);
  if (config.is_discarded()) return 0;
  try {
    mirror::saving::model_from_config(config, "fuzz/config.json");
  } catch (const mirror::DataError&) {
  }
  return 0;
}
