// Training checkpoints (Model::save_checkpoint / load_checkpoint): what a run needs to go on from
// where it was, in one file written atomically and checked by a CRC-32 before anything is read.
//
//   0   "MIRRORCK"                     8 bytes
//   8   format version (1), 0          2 x uint32
//   16  header bytes H                 uint64
//   24  header: JSON (variables' paths and shapes, optimizer, slot floats, iterations)
//   24+H  float32 weights (get_weights order), then float32 optimizer slots
//   end-4  CRC-32 (zlib) of every byte before it
// Integers and floats are little-endian (the machines Mirror runs on).
#include <zlib.h>

#include <cstring>

#include "engine/error.hpp"
#include "model/runtime.hpp"
#include "model/saving/keras_format.hpp"

namespace mirror {
namespace {

constexpr char kMagic[8] = {'M', 'I', 'R', 'R', 'O', 'R', 'C', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFixedBytes = 24 + 4;

template <typename T>
void append(std::vector<uint8_t>& out, const T* values, size_t count) {
  const auto* p = reinterpret_cast<const uint8_t*>(values);
  out.insert(out.end(), p, p + count * sizeof(T));
}

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

uint32_t crc_of(const uint8_t* data, size_t size) {
  return static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), data, size));
}

std::string shape_text(const std::vector<int64_t>& dims) { return str(Shape(dims)); }

}  // namespace

void Model::save_checkpoint(const std::string& path) {
  ModelRuntime& rt = runtime(nullptr, "save_checkpoint");
  const std::vector<float> weights = rt.get_weights(0), slots = rt.get_slots(0);
  nlohmann::json variables = nlohmann::json::array();
  for (const VariableInfo& v : this->variables())
    variables.push_back({{"path", v.path}, {"shape", v.shape.dims()}, {"trainable", v.trainable}});
  const std::string header = nlohmann::json{{"format", "mirror-checkpoint"},
                                            {"iterations", rt.iterations()},
                                            {"optimizer", optimizer_->name()},
                                            {"weight_floats", weights.size()},
                                            {"slot_floats", slots.size()},
                                            {"variables", variables}}
                                 .dump();
  std::vector<uint8_t> bytes;
  bytes.reserve(kFixedBytes + header.size() + 4 * (weights.size() + slots.size()));
  append(bytes, kMagic, 8);
  const uint32_t version[2] = {kVersion, 0};
  append(bytes, version, 2);
  const uint64_t header_bytes = header.size();
  append(bytes, &header_bytes, 1);
  append(bytes, header.data(), header.size());
  append(bytes, weights.data(), weights.size());
  append(bytes, slots.data(), slots.size());
  const uint32_t crc = crc_of(bytes.data(), bytes.size());
  append(bytes, &crc, 1);
  saving::write_file_atomically(path, bytes);
}

void Model::load_checkpoint(const std::string& path) {
  ModelRuntime& rt = runtime(nullptr, "load_checkpoint");
  const std::vector<uint8_t> bytes = saving::read_file(path, size_t{16} << 30);
  MIRROR_REQUIRE(bytes.size() >= kFixedBytes && std::memcmp(bytes.data(), kMagic, 8) == 0, DataError, path,
                 " is not a Mirror checkpoint (it does not start with MIRRORCK)");
  MIRROR_REQUIRE(load<uint32_t>(bytes.data() + 8) == kVersion, DataError, path, " is a checkpoint of format version ",
                 load<uint32_t>(bytes.data() + 8), "; this Mirror reads version ", kVersion);
  const uint32_t stored = load<uint32_t>(bytes.data() + bytes.size() - 4);
  const uint32_t actual = crc_of(bytes.data(), bytes.size() - 4);
  MIRROR_REQUIRE(stored == actual, DataError, path, " is damaged: its CRC-32 is ", stored, " but its contents give ", actual,
                 " (truncated or changed after it was written)");
  const uint64_t header_bytes = load<uint64_t>(bytes.data() + 16);
  MIRROR_REQUIRE(header_bytes <= bytes.size() - kFixedBytes, DataError, path, ": header size ", header_bytes, " exceeds the file");
  const auto header = nlohmann::json::parse(bytes.begin() + 24, bytes.begin() + 24 + static_cast<ptrdiff_t>(header_bytes),
                                            nullptr, false);
  MIRROR_REQUIRE(!header.is_discarded() && header.is_object() && header.contains("format") &&
                     header.at("format") == "mirror-checkpoint",  // value() would throw on a "format" of another type
                 DataError, path, ": the checkpoint's header is not valid");
  try {
    const std::string optimizer = header.at("optimizer").get<std::string>();
    MIRROR_REQUIRE(optimizer == optimizer_->name(), DataError, path, " was saved with optimizer ", optimizer,
                   "; the model is compiled with ", optimizer_->name());
    const std::vector<VariableInfo> mine = this->variables();
    const nlohmann::json& theirs = header.at("variables");
    MIRROR_REQUIRE(theirs.is_array() && theirs.size() == mine.size(), DataError, path, " holds ", theirs.size(),
                   " variables, the model has ", mine.size(), ": it was saved from another architecture");
    for (size_t i = 0; i < mine.size(); ++i) {
      const auto dims = theirs[i].at("shape").get<std::vector<int64_t>>();
      const std::string name = theirs[i].at("path").get<std::string>();
      MIRROR_REQUIRE(name == mine[i].path && dims == mine[i].shape.dims(), DataError, path, ": variable ", i, " is ", name,
                     " of shape ", shape_text(dims), " in the checkpoint but ", mine[i].path, " of shape ",
                     shape_text(mine[i].shape.dims()), " in the model");
    }
    const auto weight_floats = header.at("weight_floats").get<uint64_t>();
    const auto slot_floats = header.at("slot_floats").get<uint64_t>();
    const uint64_t payload = bytes.size() - kFixedBytes - header_bytes;
    MIRROR_REQUIRE(weight_floats <= payload / 4 && slot_floats <= payload / 4 && 4 * (weight_floats + slot_floats) == payload,
                   DataError, path, ": its header promises ", weight_floats, " + ", slot_floats, " floats but ", payload,
                   " bytes follow it");
    const auto* floats = bytes.data() + 24 + header_bytes;
    std::vector<float> weights(weight_floats), slots(slot_floats);
    std::memcpy(weights.data(), floats, 4 * weight_floats);
    std::memcpy(slots.data(), floats + 4 * weight_floats, 4 * slot_floats);
    MIRROR_REQUIRE(weights.size() == static_cast<size_t>(count_params()) && slots.size() == rt.get_slots(0).size(), DataError,
                   path, ": its variables or optimizer slots do not fit the model");
    const nlohmann::json& steps = header.at("iterations");  // read before anything changes
    MIRROR_REQUIRE(steps.is_number_unsigned() && steps.get<uint64_t>() <= uint64_t{INT64_MAX}, DataError, path,
                   ": its step count (iterations) is ", steps.dump(), ", not a count");
    rt.set_weights(weights);
    rt.set_slots(slots);
    rt.set_iterations(steps.get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str(path, ": the checkpoint's header is not valid (", e.what(), ")"));
  }
}

}  // namespace mirror
