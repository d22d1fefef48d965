// Keras files from Mirror's side: round trips of .weights.h5 and .keras, Keras's group keys and
// layer order, and the errors for files that do not fit (the model in memory stays unchanged).
// tests/keras/ checks the same files against Keras itself.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "mirror/mirror.hpp"
#include "mirror/model/saving/keras_format.hpp"
#include "saving_test_util.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using testing::cnn;
using testing::message_of;
using testing::ramp;
using testing::SavingTest;
namespace fs = std::filesystem;

std::unique_ptr<Model> residual() {
  const Tensor x = Input(Shape{6, 6, 2});
  Tensor y = layers::Conv2D(4, {3, 3}, {.padding = Padding::Same, .use_bias = false})(x);
  y = layers::BatchNormalization({.momentum = 0.9f})(y);
  y = layers::ReLU()(y);
  const Tensor shortcut = layers::Conv2D(4, {1, 1})(x);
  y = layers::Add()({shortcut, y});
  y = layers::ZeroPadding2D(1)(y);
  y = layers::AveragePooling2D({2, 2})(y);
  y = layers::Dropout(0.25f)(y);
  y = layers::Flatten()(y);
  y = layers::Dense(3, Activation::Softmax)(y);
  return std::make_unique<Model>(x, y);
}

TEST(KerasFormat, SnakeCaseIsKeras) {
  EXPECT_EQ(saving::to_snake_case("MaxPooling2D"), "max_pooling2d");
  EXPECT_EQ(saving::to_snake_case("ReLU"), "re_lu");
  EXPECT_EQ(saving::to_snake_case("BatchNormalization"), "batch_normalization");
  EXPECT_EQ(saving::to_snake_case("GlobalAveragePooling2D"), "global_average_pooling2d");
  EXPECT_EQ(saving::to_snake_case("InputLayer"), "input_layer");
}

// Keras lists a functional model's layers by depth, ties in depth-first order from the output
// (keras_format.hpp); this graph's order was read from a file Keras 3.15 saved.
TEST(KerasFormat, FunctionalLayerOrderIsKeras) {
  const auto model = residual();
  std::vector<std::string> keys;
  for (const auto& k : saving::keras_layers(*model)) keys.push_back(k.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"input_layer", "conv2d", "batch_normalization", "conv2d_1", "re_lu", "add",
                                            "zero_padding2d", "average_pooling2d", "dropout", "flatten", "dense"}));
}

TEST_F(SavingTest, WeightsRoundTripThroughH5) {
  auto a = cnn();
  a->compile(strategy_, optimizers::Adam());
  a->set_weights(ramp(static_cast<size_t>(a->count_params())));
  a->save_weights(path("m.weights.h5"));
  auto b = cnn();
  b->compile(strategy_, optimizers::Adam(), {}, {}, 99);
  b->load_weights(path("m.weights.h5"));
  EXPECT_EQ(a->get_weights(), b->get_weights());
}

TEST_F(SavingTest, KerasArchiveRebuildsTheGraphAndWeights) {
  auto a = residual();
  a->compile(strategy_, optimizers::Adam());
  a->set_weights(ramp(static_cast<size_t>(a->count_params())));
  a->save(path("m.keras"));
  auto b = load_model(path("m.keras"));
  EXPECT_EQ(b->variables().size(), a->variables().size());
  for (size_t i = 0; i < a->variables().size(); ++i) EXPECT_EQ(b->variables()[i].path, a->variables()[i].path);
  EXPECT_EQ(b->output_shape(), a->output_shape());
  EXPECT_EQ(b->get_weights(), a->get_weights());  // before compile: kept for it
  b->compile(strategy_, optimizers::Adam());
  EXPECT_EQ(b->get_weights(), a->get_weights());
  ImageSet two;
  two.count = 8, two.height = 6, two.width = 6, two.channels = 2;
  for (int i = 0; i < 8 * 6 * 6 * 2; ++i) two.pixels.push_back(static_cast<uint8_t>(i * 37));
  two.labels.assign(8, 0);
  EXPECT_EQ(a->predict(two), b->predict(two));
  // A Sequential stays one, and the archive's weights load into a model built in code.
  auto c = cnn();
  c->compile(strategy_, optimizers::Adam());
  c->save(path("s.keras"));
  EXPECT_TRUE(load_model(path("s.keras"))->sequential());
  auto d = cnn();
  d->load_weights(path("s.keras"));
  d->compile(strategy_, optimizers::Adam(), {}, {}, 5);
  EXPECT_EQ(c->get_weights(), d->get_weights());
}

// Keras refuses synchronized=True on every backend but TensorFlow: config.json says false, and
// metadata.json (which Keras does not read) keeps Mirror's choice, so load_model gets it back.
std::string synchronized_of(const Model& model, const std::string& layer) {
  for (const LayerPtr& l : model.layers())
    if (l->name() == layer)
      for (const auto& [key, value] : l->config())
        if (key == "synchronized") return value;
  return "(none)";
}

TEST_F(SavingTest, SynchronizedBatchNormalizationOpensInKerasAndComesBackToMirror) {
  const Tensor x = Input(Shape{4, 4, 2});
  Tensor y = layers::BatchNormalization({.synchronized = true, .name = "bn_sync"})(x);
  y = layers::BatchNormalization({.name = "bn_local"})(y);
  y = layers::Dense(3, Activation::Softmax)(layers::Flatten()(y));
  Model a(x, y);
  a.compile(strategy_, optimizers::Adam());
  a.save(path("m.keras"));
  saving::ZipReader zip(path("m.keras"));
  std::map<std::string, std::vector<uint8_t>> entries;
  for (const char* name : {"config.json", "metadata.json", "model.weights.h5"}) entries[name] = zip.read(name, 1 << 30);
  const auto json_of = [&](const char* name) { return nlohmann::json::parse(entries[name].begin(), entries[name].end()); };
  const nlohmann::json config = json_of("config.json"), metadata = json_of("metadata.json");
  for (const nlohmann::json& layer : config["config"]["layers"])
    if (layer["class_name"] == "BatchNormalization") {
      EXPECT_EQ(layer["config"]["synchronized"], false) << layer.dump();
    }
  EXPECT_EQ(metadata["mirror"]["synchronized_batch_normalization"], nlohmann::json::array({"bn_sync"})) << metadata.dump();
  auto b = load_model(path("m.keras"));
  EXPECT_EQ(synchronized_of(*b, "bn_sync"), "true");
  EXPECT_EQ(synchronized_of(*b, "bn_local"), "false");

  // A file Keras wrote on TensorFlow says true in config.json: Mirror keeps it too.
  nlohmann::json tf_config = config;
  for (nlohmann::json& layer : tf_config["config"]["layers"])
    if (layer["class_name"] == "BatchNormalization") layer["config"]["synchronized"] = true;
  const auto bytes = [](const nlohmann::json& j) { const std::string t = j.dump(); return std::vector<uint8_t>(t.begin(), t.end()); };
  const nlohmann::json keras_metadata = {{"keras_version", "3.15.1"}};
  auto c = saving::model_from_archive(saving::write_zip({{"config.json", bytes(tf_config)}, {"metadata.json", bytes(keras_metadata)},
                                                         {"model.weights.h5", entries["model.weights.h5"]}}),
                                      "tf.keras");
  EXPECT_EQ(synchronized_of(*c, "bn_local"), "true");
  // A name that is no BatchNormalization of the model is an error naming it and the file.
  nlohmann::json wrong = metadata;
  wrong["mirror"]["synchronized_batch_normalization"] = {"dense"};
  const std::string message = message_of<DataError>([&] {
    saving::model_from_archive(saving::write_zip({{"config.json", entries["config.json"]}, {"metadata.json", bytes(wrong)},
                                                  {"model.weights.h5", entries["model.weights.h5"]}}),
                               "wrong.keras");
  });
  EXPECT_NE(message.find("wrong.keras"), std::string::npos) << message;
  EXPECT_NE(message.find("\"dense\""), std::string::npos) << message;
}

TEST_F(SavingTest, AnotherArchitectureNamesTheVariableAndBothShapesAndChangesNothing) {
  auto a = cnn(4);
  a->compile(strategy_, optimizers::Adam());
  a->save_weights(path("m.weights.h5"));
  auto b = cnn(5);
  b->compile(strategy_, optimizers::Adam());
  const std::vector<float> before = b->get_weights();
  const std::string message = message_of<DataError>([&] { b->load_weights(path("m.weights.h5")); });
  EXPECT_NE(message.find("conv2d/kernel"), std::string::npos) << message;
  EXPECT_NE(message.find("(3, 3, 1, 4)"), std::string::npos) << message;
  EXPECT_NE(message.find("(3, 3, 1, 5)"), std::string::npos) << message;
  EXPECT_EQ(b->get_weights(), before);
}

TEST_F(SavingTest, BrokenFilesAreClearErrors) {
  auto a = cnn();
  a->compile(strategy_, optimizers::Adam());
  a->save_weights(path("m.weights.h5"));
  a->save(path("m.keras"));
  const std::vector<float> before = a->get_weights();
  const auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    std::ofstream(path(name), std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };
  std::vector<uint8_t> h5 = saving::read_file(path("m.weights.h5"), 1 << 30);
  write("cut.weights.h5", std::vector<uint8_t>(h5.begin(), h5.begin() + static_cast<ptrdiff_t>(h5.size() / 2)));
  write("text.weights.h5", {'h', 'e', 'l', 'l', 'o'});
  std::vector<uint8_t> zip = saving::read_file(path("m.keras"), 1 << 30);
  write("cut.keras", std::vector<uint8_t>(zip.begin(), zip.begin() + static_cast<ptrdiff_t>(zip.size() / 2)));
  for (const char* name : {"cut.weights.h5", "text.weights.h5", "cut.keras", "missing.weights.h5"}) {
    const std::string message = message_of<DataError>([&] { a->load_weights(path(name)); });
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
  EXPECT_NE(message_of<DataError>([&] { load_model(path("cut.keras")); }).find("cut.keras"), std::string::npos);
  EXPECT_EQ(a->get_weights(), before);
  // An HDF5 file that is not a Keras file.
  saving::WeightsImage other;
  other.model_name = "x";
  write("other.weights.h5", saving::write_weights_h5(other));
  EXPECT_NE(message_of<DataError>([&] { a->load_weights(path("other.weights.h5")); }).find("has 2 variables in the model but 0"), std::string::npos);
}

TEST_F(SavingTest, UnknownLayerClassAndOldKerasAreNamed) {
  auto a = cnn();
  a->compile(strategy_, optimizers::Adam());
  nlohmann::json config = saving::model_config(*a);
  config["config"]["layers"][1]["class_name"] = "LSTM";
  const std::string message = message_of<DataError>([&] { saving::model_from_config(config, "x.keras"); });
  EXPECT_NE(message.find("LSTM"), std::string::npos) << message;
  EXPECT_NE(message.find("x.keras"), std::string::npos) << message;
  const auto archive = saving::write_zip({{"config.json", {'{', '}'}}, {"metadata.json", {'{', '}'}},
                                          {"model.weights.h5", saving::write_weights_h5(saving::weights_of(*a))}});
  EXPECT_NE(message_of<DataError>([&] { saving::model_from_archive(archive, "old.keras"); }).find("Keras 3"), std::string::npos);
}

// Regularizers and constraints would change training; Mirror has none, so it refuses them by
// name rather than train without them. Keras's default, null, is accepted.
TEST_F(SavingTest, RegularizersAndConstraintsAreRefusedByName) {
  const Tensor x = Input(Shape{4, 4, 2});
  const Tensor y = layers::Dense(3, Activation::Softmax)(layers::Flatten()(layers::BatchNormalization()(x)));
  Model a(x, y);
  a.compile(strategy_, optimizers::Adam());
  const nlohmann::json config = saving::model_config(a);
  const auto with = [&](const std::string& cls, const std::string& key, const nlohmann::json& value) {
    nlohmann::json c = config;
    for (nlohmann::json& layer : c["config"]["layers"])
      if (layer["class_name"] == cls) layer["config"][key] = value;
    return c;
  };
  const auto keras_object = [](const char* module, const char* cls, const nlohmann::json& args) {
    return nlohmann::json{{"module", module}, {"class_name", cls}, {"config", args}, {"registered_name", nullptr}};
  };
  const auto refusal = [&](const nlohmann::json& c) { return message_of<DataError>([&] { saving::model_from_config(c, "r.keras"); }); };
  std::string message = refusal(with("Dense", "kernel_regularizer", keras_object("keras.regularizers", "L2", {{"l2", 0.01}})));
  EXPECT_NE(message.find("r.keras: layer 'dense' has kernel_regularizer L2 (l2=0.01), which Mirror does not implement"),
            std::string::npos) << message;
  message = refusal(with("BatchNormalization", "gamma_constraint", keras_object("keras.constraints", "NonNeg", nlohmann::json::object())));
  EXPECT_NE(message.find("layer 'batch_normalization' has gamma_constraint NonNeg,"), std::string::npos) << message;
  for (const char* key : {"bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"}) {
    message = refusal(with("Dense", key, keras_object("keras.constraints", "MaxNorm", {{"max_value", 2}})));
    EXPECT_NE(message.find(std::string("has ") + key + " MaxNorm (max_value=2)"), std::string::npos) << message;
  }
  for (const char* key : {"beta_regularizer", "gamma_regularizer", "beta_constraint"})
    EXPECT_NE(refusal(with("BatchNormalization", key, keras_object("keras.regularizers", "L1", {{"l1", 0.5}}))).find(key), std::string::npos);
  EXPECT_NE(saving::model_from_config(with("Dense", "kernel_regularizer", nullptr), "r.keras"), nullptr);
}

TEST_F(SavingTest, AFailedSaveLeavesThePreviousFileAndNoTemporary) {
  auto a = cnn();
  a->compile(strategy_, optimizers::Adam());
  a->save_weights(path("m.weights.h5"));
  const auto before = saving::read_file(path("m.weights.h5"), 1 << 30);
  EXPECT_NE(message_of<DataError>([&] { a->save_weights(path("no/such/dir/m.weights.h5")); }).find("No such file"), std::string::npos);
  EXPECT_NE(message_of<InvalidArgument>([&] { a->save_weights(path("m.h5")); }).find(".weights.h5"), std::string::npos);
  a->set_weights(ramp(static_cast<size_t>(a->count_params())));
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  if (::access(dir_.c_str(), W_OK) != 0) {  // root writes anyway
    EXPECT_NE(message_of<DataError>([&] { a->save_weights(path("m.weights.h5")); }).find("cannot write"), std::string::npos);
    EXPECT_EQ(saving::read_file(path("m.weights.h5"), 1 << 30), before);
  }
  fs::permissions(dir_, fs::perms::owner_all);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

// A checkpoint taken between two fits makes the second one run the same from the file.
TEST_F(SavingTest, CheckpointResumesTrainingExactly) {
  const ImageSet data = testing::synthetic_images(64, 8, 8, 3, 11);
  const FitOptions options{.epochs = 1, .batch_size = 16, .verbose = 0};
  HostStrategy two(2, 1);
  auto a = cnn();
  a->compile(two, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {}, 3);
  a->fit(data, options);
  a->save_checkpoint(path("a.ckpt"));
  a->fit(data, options);
  auto b = cnn();
  b->compile(two, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {}, 4);
  b->load_checkpoint(path("a.ckpt"));
  EXPECT_EQ(b->iterations(), 4);
  b->fit(data, options);
  EXPECT_EQ(b->get_weights(), a->get_weights());  // bitwise: same strategy, same steps
  // Onto another replica count: the same model up to the order of the gradient sums.
  auto c = cnn();
  c->compile(strategy_, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {}, 5);
  c->load_checkpoint(path("a.ckpt"));
  c->fit(data, options);
  const std::vector<float> wa = a->get_weights(), wc = c->get_weights();
  for (size_t i = 0; i < wa.size(); ++i) ASSERT_NEAR(wc[i], wa[i], 1e-4f + 1e-3f * std::abs(wa[i])) << "at " << i;
}

TEST_F(SavingTest, DamagedOrForeignCheckpointsChangeNothing) {
  auto a = cnn(4);
  a->compile(strategy_, optimizers::Adam());
  a->save_checkpoint(path("a.ckpt"));
  std::vector<uint8_t> bytes = saving::read_file(path("a.ckpt"), 1 << 30);
  const auto write = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::ofstream(path(name), std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  std::vector<uint8_t> flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x10;
  write("flipped.ckpt", flipped);
  write("cut.ckpt", std::vector<uint8_t>(bytes.begin(), bytes.end() - 100));
  write("empty.ckpt", {});
  auto b = cnn(5);
  b->compile(strategy_, optimizers::Adam(), {}, {}, 9);
  const std::vector<float> before = b->get_weights();
  EXPECT_NE(message_of<DataError>([&] { b->load_checkpoint(path("flipped.ckpt")); }).find("damaged"), std::string::npos);
  EXPECT_NE(message_of<DataError>([&] { b->load_checkpoint(path("cut.ckpt")); }).find("cut.ckpt"), std::string::npos);
  EXPECT_NE(message_of<DataError>([&] { b->load_checkpoint(path("empty.ckpt")); }).find("not a Mirror checkpoint"), std::string::npos);
  const std::string m = message_of<DataError>([&] { b->load_checkpoint(path("a.ckpt")); });
  EXPECT_NE(m.find("conv2d/kernel"), std::string::npos) << m;
  EXPECT_NE(m.find("4)"), std::string::npos) << m;
  EXPECT_NE(m.find("5)"), std::string::npos) << m;
  auto c = cnn(4);
  c->compile(strategy_, optimizers::SGD());
  EXPECT_NE(message_of<DataError>([&] { c->load_checkpoint(path("a.ckpt")); }).find("adam"), std::string::npos);
  EXPECT_EQ(b->get_weights(), before);
  EXPECT_EQ(b->iterations(), 0);
}

}  // namespace
}  // namespace mirror
