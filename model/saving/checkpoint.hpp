// Training checkpoints, private to model/: a JSON header and named arrays of float32 and float64
// in one file, checked by a CRC-32 before anything is read. Model::save_checkpoint writes the
// model's part (variables, optimizer slots, iteration count, a fixed learning rate); fit's backups
// (backup.hpp) add where the run was (epoch, step, running totals, history, callbacks' state).
//
//   0   "MIRRORCK"                     8 bytes
//   8   format version (2), 0          2 x uint32
//   16  header bytes H                 uint64
//   24  header: JSON; its "arrays" lists each array's name, type ("f32", "f64") and count, in file order
//   24+H  the arrays, back to back
//   end-4  CRC-32 (zlib) of every byte before it
// Integers and floats are little-endian (the machines Mirror runs on). Doubles travel in arrays, not
// in the JSON, so infinities and NaNs (a best value not yet set, a diverged loss) come back exactly.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mirror/model/model.hpp"

namespace mirror {

class ModelRuntime;

namespace saving {

struct Checkpoint {
  nlohmann::json header = nlohmann::json::object();
  std::map<std::string, std::vector<float>> floats;
  std::map<std::string, std::vector<double>> doubles;

  // The array `name`, or a DataError naming `source` when the file has none.
  const std::vector<float>& f32(const std::string& name, const std::string& source) const;
  const std::vector<double>& f64(const std::string& name, const std::string& source) const;
};

std::vector<uint8_t> encode_checkpoint(const Checkpoint& checkpoint);
// Throws DataError naming `source`: not a checkpoint, another format version, a CRC that does not
// match, a header that does not describe the bytes.
Checkpoint decode_checkpoint(std::span<const uint8_t> bytes, const std::string& source);

// The checkpoint in the file `path`. Its fixed part and header are read and checked first: a file
// that is not a checkpoint, whose size is not what its header promises, or that would take more
// than `max_bytes`, is refused (DataError naming it) before the rest is read; then as
// decode_checkpoint.
Checkpoint read_checkpoint(const std::string& path, size_t max_bytes);
// The most bytes a checkpoint of this model may take: its variables, optimizer slots and
// `weight_copies` more copies of its variables (the best weights an EarlyStopping callback keeps),
// with generous room for the header and a fit's state (history, running totals).
size_t checkpoint_limit(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, size_t weight_copies);

// The model's part of a checkpoint: every variable (paths and shapes in the header), the optimizer's
// name, slots and iteration count, its learning rate when it is a fixed value (callbacks change it),
// and the seed of the model's random streams (dropout). `iterations`: the optimizer steps the
// variables have had (fit counts an epoch's steps up front, so its backups say how many were done).
void capture_model(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, int64_t iterations,
                   Checkpoint& checkpoint);
// Throws DataError when `checkpoint` does not fit the model (naming the variable and both shapes, or
// the optimizers); changes nothing.
void check_model(ModelRuntime& runtime, const std::vector<VariableInfo>& variables, const Checkpoint& checkpoint,
                 const std::string& source);
// Sets every replica's variables and slots, the iteration count, the learning rate and the seed
// (after check_model).
void restore_model(ModelRuntime& runtime, const Checkpoint& checkpoint, const std::string& source);

}  // namespace saving
}  // namespace mirror
