// A program outside Mirror's tree that uses an installed Mirror (pkg-config, CMake) or Mirror as a
// Meson subproject: trains a small CNN on random images on the host strategy and checks that the
// loss went down. Exit 0 when it did.
#include <mirror/mirror.hpp>

#include <iostream>
#include <random>

int main() {
  using namespace mirror;
  ImageSet data;
  data.count = 256;
  data.height = data.width = 8;
  data.channels = 1;
  std::mt19937 random(7);
  std::uniform_int_distribution<int> pixel(0, 127);
  for (int64_t i = 0; i < data.count; ++i) {
    const int32_t label = static_cast<int32_t>(i % 2);
    data.labels.push_back(label);
    for (int p = 0; p < 64; ++p) data.pixels.push_back(static_cast<uint8_t>(pixel(random) + (label && p < 32 ? 128 : 0)));
  }
  HostStrategy strategy(2, 2);
  Sequential model({layers::Conv2D(4, {3, 3}, Activation::ReLU, Shape{8, 8, 1}), layers::Flatten(),
                    layers::Dense(2, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()});
  const History history = model.fit(data, {.epochs = 5, .batch_size = 32, .verbose = 0});
  const double first = history.epochs.front().loss, last = history.epochs.back().loss;
  std::cout << "Mirror client: loss " << first << " -> " << last << ", accuracy " << history.epochs.back().accuracy << '\n';
  return last < first ? 0 : 1;
}
