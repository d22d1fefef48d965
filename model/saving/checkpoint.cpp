// Training checkpoints: the file (checkpoint.hpp) and Model::save_checkpoint / load_checkpoint.
#include "mirror/model/saving/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "mirror/engine/error.hpp"
#include "mirror/model/runtime.hpp"
#include "mirror/model/saving/keras_format.hpp"

namespace mirror::saving {
namespace {

constexpr char kMagic[8] = {'M', 'I', 'R', 'R', 'O', 'R', 'C', 'K'};
constexpr uint32_t kVersion = 2;
constexpr size_t kFixedBytes = 24 + 4;
// The header is a list of variables and arrays and a fit's history: far less than this.
constexpr uint64_t kMaxHeaderBytes = uint64_t{64} << 20;
// Room in a checkpoint beyond the variables, slots and callbacks' copies of the weights: a fit's
// history, running totals and callbacks' numbers, which take kilobytes.
constexpr size_t kStateBytes = size_t{64} << 20;

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

// Copies `count` values of T from `bytes` at `offset` into `out` (the caller checked the size).
template <typename T>
std::vector<T> read_array(std::span<const uint8_t> bytes, size_t offset, uint64_t count) {
  std::vector<T> out(static_cast<size_t>(count));
  if (count) std::memcpy(out.data(), bytes.data() + offset, static_cast<size_t>(count) * sizeof(T));
  return out;
}

// `count` bytes of `fd` at `offset`, or fewer at the end of the file.
std::vector<uint8_t> read_at(int fd, uint64_t offset, size_t count, const std::string& source) {
  std::vector<uint8_t> bytes(count);
  size_t done = 0;
  while (done < count) {
    const ssize_t n = ::pread(fd, bytes.data() + done, count - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    MIRROR_REQUIRE(n >= 0, DataError, "cannot read ", source, ": ", std::strerror(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

// The size of the file that `header` (the JSON of a checkpoint whose header takes
// `header_bytes`) describes, saturated at UINT64_MAX; DataError when it lists no valid arrays.
uint64_t promised_bytes(const nlohmann::json& header, uint64_t header_bytes, const std::string& source) {
  MIRROR_REQUIRE(!header.is_discarded() && header.is_object() && header.contains("arrays") &&
                     header["arrays"].is_array(),
                 DataError, source, ": the checkpoint's header is not valid");
  uint64_t total = kFixedBytes + header_bytes;
  try {
    for (const nlohmann::json& array : header["arrays"]) {
      const auto type = array.at("type").get<std::string>();
      const uint64_t width = type == "f32" ? sizeof(float) : type == "f64" ? sizeof(double) : 0;
      const auto count = array.at("count").get<uint64_t>();
      if (width == 0) continue;  // decode_checkpoint names the type
      if (count > (UINT64_MAX - total) / width) return UINT64_MAX;
      total += count * width;
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str(source, ": the checkpoint's header is not valid (", e.what(), ")"));
  }
  return total;
}

}  // namespace

const std::vector<float>& Checkpoint::f32(const std::string& name, const std::string& source) const {
  const auto it = floats.find(name);
  MIRROR_REQUIRE(it != floats.end(), DataError, source, ": the checkpoint has no array '", name, "'");
  return it->second;
}

const std::vector<double>& Checkpoint::f64(const std::string& name, const std::string& source) const {
  const auto it = doubles.find(name);
  MIRROR_REQUIRE(it != doubles.end(), DataError, source, ": the checkpoint has no array '", name, "'");
  return it->second;
}

std::vector<uint8_t> encode_checkpoint(const Checkpoint& checkpoint) {
  nlohmann::json header = checkpoint.header;
  header["format"] = "mirror-checkpoint";
  nlohmann::json arrays = nlohmann::json::array();
  size_t payload = 0;
  for (const auto& [name, values] : checkpoint.floats) {
    arrays.push_back({{"name", name}, {"type", "f32"}, {"count", values.size()}});
    payload += values.size() * sizeof(float);
  }
  for (const auto& [name, values] : checkpoint.doubles) {
    arrays.push_back({{"name", name}, {"type", "f64"}, {"count", values.size()}});
    payload += values.size() * sizeof(double);
  }
  header["arrays"] = arrays;
  const std::string text = header.dump();
  std::vector<uint8_t> bytes;
  bytes.reserve(kFixedBytes + text.size() + payload);
  append(bytes, kMagic, 8);
  const uint32_t version[2] = {kVersion, 0};
  append(bytes, version, 2);
  const uint64_t header_bytes = text.size();
  append(bytes, &header_bytes, 1);
  append(bytes, text.data(), text.size());
  for (const auto& [name, values] : checkpoint.floats) append(bytes, values.data(), values.size());
  for (const auto& [name, values] : checkpoint.doubles) append(bytes, values.data(), values.size());
  const uint32_t crc = crc_of(bytes.data(), bytes.size());
  append(bytes, &crc, 1);
  return bytes;
}

Checkpoint decode_checkpoint(std::span<const uint8_t> bytes, const std::string& source) {
  MIRROR_REQUIRE(bytes.size() >= kFixedBytes && std::memcmp(bytes.data(), kMagic, 8) == 0, DataError, source,
                 " is not a Mirror checkpoint (it does not start with MIRRORCK)");
  const auto version = load<uint32_t>(bytes.data() + 8);
  MIRROR_REQUIRE(version == kVersion, DataError, source, " is a checkpoint of format version ", version,
                 "; this Mirror reads version ", kVersion);
  const auto stored = load<uint32_t>(bytes.data() + bytes.size() - 4);
  const uint32_t actual = crc_of(bytes.data(), bytes.size() - 4);
  MIRROR_REQUIRE(stored == actual, DataError, source, " is damaged: its CRC-32 is ", stored, " but its contents give ",
                 actual, " (truncated or changed after it was written)");
  const auto header_bytes = load<uint64_t>(bytes.data() + 16);
  MIRROR_REQUIRE(header_bytes <= bytes.size() - kFixedBytes, DataError, source, ": header size ", header_bytes,
                 " exceeds the file");
  Checkpoint checkpoint;
  checkpoint.header = nlohmann::json::parse(bytes.begin() + 24, bytes.begin() + 24 + static_cast<ptrdiff_t>(header_bytes),
                                            nullptr, false);
  const nlohmann::json& header = checkpoint.header;
  MIRROR_REQUIRE(!header.is_discarded() && header.is_object() && header.contains("format") &&
                     header["format"] == "mirror-checkpoint" &&
                     header.contains("arrays") && header["arrays"].is_array(),
                 DataError, source, ": the checkpoint's header is not valid");
  size_t offset = 24 + static_cast<size_t>(header_bytes);
  const size_t end = bytes.size() - 4;
  try {
    for (const nlohmann::json& array : header["arrays"]) {
      const auto name = array.at("name").get<std::string>();
      const auto type = array.at("type").get<std::string>();
      const auto count = array.at("count").get<uint64_t>();
      const size_t width = type == "f32" ? sizeof(float) : type == "f64" ? sizeof(double) : 0;
      MIRROR_REQUIRE(width != 0, DataError, source, ": array '", name, "' has an unknown type '", type, "'");
      MIRROR_REQUIRE(count <= (end - offset) / width, DataError, source, ": array '", name, "' of ", count, " ", type,
                     " values runs past the end of the file");
      if (width == sizeof(float)) {
        checkpoint.floats[name] = read_array<float>(bytes, offset, count);
      } else {
        checkpoint.doubles[name] = read_array<double>(bytes, offset, count);
      }
      offset += static_cast<size_t>(count) * width;
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str(source, ": the checkpoint's header is not valid (", e.what(), ")"));
  }
  MIRROR_REQUIRE(offset == end, DataError, source, ": ", end - offset, " bytes follow the arrays its header lists");
  return checkpoint;
}

size_t checkpoint_limit(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, size_t weight_copies) {
  size_t floats = 0;
  for (const VariableInfo& v : variables) floats += static_cast<size_t>(v.shape.count());
  const size_t slots = static_cast<size_t>(runtime.optimizer().slot_count()) * runtime.plan().trainable_floats;
  return kFixedBytes + kMaxHeaderBytes + sizeof(float) * (floats * (1 + weight_copies) + slots) + kStateBytes;
}

Checkpoint read_checkpoint(const std::string& path, size_t max_bytes) {
  const Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = file.get();
  MIRROR_REQUIRE(fd >= 0, DataError, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  MIRROR_REQUIRE(::fstat(fd, &st) == 0, DataError, "cannot read ", path, ": ", std::strerror(errno));
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  // The fixed part and the header first: a file that is not a checkpoint, or whose size is not the
  // one its header promises or more than the model allows, costs its first bytes, not its size.
  const std::vector<uint8_t> fixed = read_at(fd, 0, 24, path);
  MIRROR_REQUIRE(fixed.size() == 24 && file_bytes >= kFixedBytes && std::memcmp(fixed.data(), kMagic, 8) == 0,
                 DataError, path, " is not a Mirror checkpoint (it does not start with MIRRORCK)");
  const auto version = load<uint32_t>(fixed.data() + 8);
  MIRROR_REQUIRE(version == kVersion, DataError, path, " is a checkpoint of format version ", version,
                 "; this Mirror reads version ", kVersion);
  const auto header_bytes = load<uint64_t>(fixed.data() + 16);
  MIRROR_REQUIRE(header_bytes <= std::min<uint64_t>(kMaxHeaderBytes, file_bytes - kFixedBytes), DataError, path,
                 ": header size ", header_bytes, " exceeds the file or the ", kMaxHeaderBytes,
                 " bytes a header may take");
  const std::vector<uint8_t> text = read_at(fd, 24, static_cast<size_t>(header_bytes), path);
  MIRROR_REQUIRE(text.size() == header_bytes, DataError, path, " is damaged: it ends inside its header");
  const uint64_t promised =
      promised_bytes(nlohmann::json::parse(text.begin(), text.end(), nullptr, false), header_bytes, path);
  MIRROR_REQUIRE(promised == file_bytes, DataError, path, " is damaged: its header promises ", promised,
                 " bytes but the file holds ", file_bytes, " (truncated, or changed after it was written)");
  MIRROR_REQUIRE(promised <= max_bytes, DataError, path, " holds ", promised, " bytes, more than the ", max_bytes,
                 " bytes a checkpoint of this model may take (its variables, optimizer slots and state): it is "
                 "damaged or of another model");
  // The whole file from the same descriptor: what was checked is what is decoded.
  return decode_checkpoint(read_at(fd, 0, static_cast<size_t>(promised), path), path);
}

void capture_model(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, int64_t iterations,
                   Checkpoint& checkpoint) {
  nlohmann::json list = nlohmann::json::array();
  for (const VariableInfo& v : variables)
    list.push_back({{"path", v.path}, {"shape", v.shape.dims()}, {"trainable", v.trainable}});
  const Optimizer& optimizer = runtime.optimizer();
  nlohmann::json model{{"variables", list},
                       {"optimizer", optimizer.name()},
                       {"iterations", iterations},
                       {"seed", runtime.seed()}};
  checkpoint.header["model"] = model;
  checkpoint.floats["weights"] = runtime.get_weights(0);
  checkpoint.floats["slots"] = runtime.get_slots(0);
  if (!optimizer.has_schedule()) checkpoint.doubles["learning_rate"] = {optimizer.learning_rate(0)};
}

void check_model(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, const Checkpoint& checkpoint,
                 const std::string& source) {
  try {
    const nlohmann::json& model = checkpoint.header.at("model");
    const auto optimizer = model.at("optimizer").get<std::string>();
    MIRROR_REQUIRE(optimizer == runtime.optimizer().name(), DataError, source, " was saved with optimizer ", optimizer,
                   "; the model is compiled with ", runtime.optimizer().name());
    const nlohmann::json& theirs = model.at("variables");
    MIRROR_REQUIRE(theirs.is_array() && theirs.size() == variables.size(), DataError, source, " holds ", theirs.size(),
                   " variables, the model has ", variables.size(), ": it was saved from another architecture");
    for (size_t i = 0; i < variables.size(); ++i) {
      const auto dims = theirs[i].at("shape").get<std::vector<int64_t>>();
      const auto name = theirs[i].at("path").get<std::string>();
      MIRROR_REQUIRE(name == variables[i].path && dims == variables[i].shape.dims(), DataError, source, ": variable ", i,
                     " is ", name, " of shape ", shape_text(dims), " in the checkpoint but ", variables[i].path,
                     " of shape ", shape_text(variables[i].shape.dims()), " in the model");
    }
    const nlohmann::json& steps = model.at("iterations");
    MIRROR_REQUIRE(steps.is_number_unsigned() && steps.get<uint64_t>() <= uint64_t{INT64_MAX}, DataError, source,
                   ": its step count (iterations) is ", steps.dump(), ", not a count");
    MIRROR_REQUIRE(model.at("seed").is_number_unsigned(), DataError, source, ": its seed is ", model.at("seed").dump(),
                   ", not a seed");
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str(source, ": the checkpoint's header is not valid (", e.what(), ")"));
  }
  int64_t floats = 0;
  for (const VariableInfo& v : variables) floats += v.shape.count();
  const size_t slots = static_cast<size_t>(runtime.optimizer().slot_count()) * runtime.plan().trainable_floats;
  MIRROR_REQUIRE(checkpoint.f32("weights", source).size() == static_cast<size_t>(floats) &&
                     checkpoint.f32("slots", source).size() == slots,
                 DataError, source, ": its variables or optimizer slots do not fit the model");
  if (!runtime.optimizer().has_schedule() && checkpoint.doubles.count("learning_rate")) {
    const std::vector<double>& rate = checkpoint.doubles.at("learning_rate");
    // Checked as the float the optimizer keeps: 1e300 is a finite double but an infinite float.
    MIRROR_REQUIRE(rate.size() == 1 && rate[0] >= 0 && std::isfinite(static_cast<float>(rate[0])), DataError, source,
                   ": its learning rate is not a finite value >= 0");
  }
}

void restore_model(ModelRuntime& runtime, const Checkpoint& checkpoint, const std::string& source) {
  runtime.set_weights(checkpoint.f32("weights", source));
  runtime.set_slots(checkpoint.f32("slots", source));
  runtime.set_iterations(checkpoint.header["model"]["iterations"].get<int64_t>());
  runtime.set_seed(checkpoint.header["model"]["seed"].get<uint64_t>());
  if (!runtime.optimizer().has_schedule() && checkpoint.doubles.count("learning_rate"))
    runtime.optimizer().set_learning_rate(static_cast<float>(checkpoint.doubles.at("learning_rate")[0]));
}

}  // namespace mirror::saving

namespace mirror {

void Model::save_checkpoint(const std::string& path) {
  ModelRuntime& rt = runtime(nullptr, "save_checkpoint");
  saving::Checkpoint checkpoint;
  saving::capture_model(rt, variables(), rt.iterations(), checkpoint);
  saving::write_file_atomically(path, saving::encode_checkpoint(checkpoint));
}

void Model::load_checkpoint(const std::string& path) {
  ModelRuntime& rt = runtime(nullptr, "load_checkpoint");
  const saving::Checkpoint checkpoint = saving::read_checkpoint(path, saving::checkpoint_limit(rt, variables(), 0));
  saving::check_model(rt, variables(), checkpoint, path);
  saving::restore_model(rt, checkpoint, path);
}

}  // namespace mirror
