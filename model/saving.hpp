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

#include "model/model.hpp"

namespace mirror {

std::unique_ptr<Model> load_model(const std::string& path);

namespace saving {
// The same from bytes (the fuzz targets): `source` names them in errors.
std::unique_ptr<Model> model_from_archive(std::span<const uint8_t> bytes, const std::string& source);
std::vector<uint8_t> keras_archive(Model& model);
}  // namespace saving

}  // namespace mirror
