// Mirror's side of the Keras interoperability test (run by keras_interop.sh through interop.py):
// writes Keras files and predictions of the test models, and predicts with files Keras wrote.
//
//   keras_interop write ARCH DIR                      DIR/mirror_ARCH.{keras,weights.h5,pred}, DIR/batch_ARCH.u8
//   keras_interop predict-model FILE.keras BATCH OUT  load_model, then predict
//   keras_interop predict-weights ARCH FILE BATCH OUT the ARCH model built in C++, load_weights, then predict
//
// Batches are raw uint8 NHWC pixels (Mirror and Keras both see pixels / 255); predictions raw
// float32 (count, 10).
#include <cmath>
#include <fstream>
#include <iostream>

#include "mirror/mirror.hpp"

using namespace mirror;

namespace {

constexpr int64_t kBatch = 16;

// The reference CNN, and a residual block with batch normalization, synchronized across replicas
// in "res_sync" (all ending in 10 classes).
std::unique_ptr<Model> build(const std::string& arch) {
  if (arch == "cnn")
    return std::make_unique<Sequential>(std::vector<LayerPtr>{
        layers::Conv2D(32, {3, 3}, Activation::ReLU, Shape{28, 28, 1}), layers::MaxPooling2D({2, 2}), layers::Flatten(),
        layers::Dense(10, Activation::Softmax)});
  if (arch == "res" || arch == "res_sync") {
    const Tensor x = Input(Shape{12, 12, 3});
    Tensor y = layers::Conv2D(8, {3, 3}, {.padding = Padding::Same, .use_bias = false})(x);
    y = layers::BatchNormalization({.synchronized = arch == "res_sync"})(y);
    y = layers::ReLU()(y);
    const Tensor shortcut = layers::Conv2D(8, {1, 1})(x);
    y = layers::Add()({shortcut, y});
    y = layers::MaxPooling2D({2, 2})(y);
    y = layers::GlobalAveragePooling2D()(y);
    y = layers::Dense(10, Activation::Softmax)(y);
    return std::make_unique<Model>(x, y);
  }
  throw InvalidArgument(str("unknown architecture '", arch, "' (cnn, res or res_sync)"));
}

ImageSet read_batch(const std::string& path, const Shape& sample) {
  std::ifstream in(path, std::ios::binary);
  ImageSet set;
  set.height = sample[0], set.width = sample[1], set.channels = sample[2];
  set.pixels.assign(std::istreambuf_iterator<char>(in), {});
  set.count = static_cast<int64_t>(set.pixels.size()) / set.sample_size();
  set.labels.assign(static_cast<size_t>(set.count), 0);
  MIRROR_REQUIRE(set.count > 0 && set.pixels.size() == static_cast<size_t>(set.count * set.sample_size()), DataError,
                 path, " does not hold whole samples of shape ", sample);
  return set;
}

void write_floats(const std::string& path, const std::vector<float>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  MIRROR_REQUIRE(out.good(), DataError, "cannot write ", path);
}

// Replaces every variable with deterministic values of a size that makes the softmax outputs
// differ in their leading digits (moving variances positive), so a misplaced variable shows.
void randomize(Model& model) {
  std::vector<float> w;
  uint64_t state = 12345;
  for (const VariableInfo& v : model.variables()) {
    const bool variance = v.path.ends_with("moving_variance");
    for (int64_t i = 0; i < v.shape.count(); ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      const float u = static_cast<float>(state >> 40) / static_cast<float>(1 << 24);  // [0, 1)
      w.push_back(variance ? 0.5f + u : (u - 0.5f) * 0.6f);
    }
  }
  model.set_weights(w);
}

// The strategy must outlive the model.
std::vector<float> predict(Strategy& strategy, Model& model, const std::string& batch) {
  model.compile(strategy, optimizers::Adam());
  return model.predict(read_batch(batch, model.input_shape()), kBatch);
}

int run(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  HostStrategy strategy(1, 1);
  if (command == "write" && argc == 4) {
    const std::string arch = argv[2], dir = argv[3];
    auto model = build(arch);
    model->compile(strategy, optimizers::Adam());
    randomize(*model);
    const Shape s = model->input_shape();
    std::vector<char> pixels(static_cast<size_t>(kBatch * s.count()));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>((i * 2654435761u) >> 24);
    std::ofstream(dir + "/batch_" + arch + ".u8", std::ios::binary).write(pixels.data(), static_cast<std::streamsize>(pixels.size()));
    model->save(dir + "/mirror_" + arch + ".keras");
    model->save_weights(dir + "/mirror_" + arch + ".weights.h5");
    write_floats(dir + "/mirror_" + arch + ".pred", model->predict(read_batch(dir + "/batch_" + arch + ".u8", s), kBatch));
    return 0;
  }
  if (command == "predict-model" && argc == 5) {
    auto model = load_model(argv[2]);
    write_floats(argv[4], predict(strategy, *model, argv[3]));
    return 0;
  }
  if (command == "predict-weights" && argc == 6) {
    auto model = build(argv[2]);
    model->load_weights(argv[3]);
    write_floats(argv[5], predict(strategy, *model, argv[4]));
    return 0;
  }
  std::cerr << "usage: keras_interop write ARCH DIR | predict-model FILE BATCH OUT | predict-weights ARCH FILE BATCH OUT\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "keras_interop: " << e.what() << '\n';
    return 1;
  }
}
