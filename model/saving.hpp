// Keras 3's files. A model saves itself (Model::save, save_weights in model.hpp); load_model
// rebuilds one from a ".keras" archive that Keras or Mirror wrote:
//
//   model.save("cnn.keras");                       // keras.saving.load_model("cnn.keras") reads it
//   std::unique_ptr<Model> m = load_model("cnn.keras");
//   m->compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy());  // keeps the weights
//
// The model comes back built with its weights but not compiled (Keras's compile_config and optimizer
// state are not read). Throws DataError naming the file and the problem: not a zip, not Keras 3, a
// layer class Mirror does not have, weights that do not fit the config.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mirror/model/model.hpp"

namespace mirror {

std::unique_ptr<Model> load_model(const std::string& path);

namespace saving {
// The same from bytes (the fuzz targets): `source` names them in errors.
std::unique_ptr<Model> model_from_archive(std::span<const uint8_t> bytes, const std::string& source);
std::vector<uint8_t> keras_archive(Model& model);

// Writes `bytes` to `path` durably or not at all: a temporary file beside it (".NAME.tmp-PID"),
// fsync, rename, fsync of the directory. Every file Mirror saves goes this way; a program can write
// its own results so too. First removes the temporary files of `path` that writers killed mid-write
// left: those whose process is gone, and those older than a day (a PID may be reused). Throws
// DataError naming the path, the step that failed and errno's reason, after removing the temporary
// file (the previous file, if any, is unchanged).
void write_file_atomically(const std::string& path, std::span<const uint8_t> bytes);

// Deletes the backups fit wrote to `backup_dir` (FitOptions::backup_dir) and nothing else. A program
// that keeps them past fit (backup_keep_at_end) calls it once its own work after fit (evaluating,
// saving) is done too, so that a process killed in between still resumes instead of starting over.
void remove_backups(const std::string& backup_dir);
}  // namespace saving

}  // namespace mirror
