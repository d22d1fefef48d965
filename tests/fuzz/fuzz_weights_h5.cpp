// libFuzzer target: the .weights.h5 reader (libhdf5, in the child process read_weights_h5 forks)
// on arbitrary bytes, then loading what it read into a small model. DataError is a correct answer
// (a crash, hang or exhausted memory in libhdf5 among them); anything else a finding.
#include <cstdint>

#include "mirror/mirror.hpp"
#include "mirror/model/saving/keras_format.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mirror;
  static Sequential* model = [] {
    auto* m = new Sequential({layers::Conv2D(2, {3, 3}, Activation::ReLU, Shape{6, 6, 1}), layers::MaxPooling2D({2, 2}),
                              layers::Flatten(), layers::Dense(3, Activation::Softmax)});
    m->build(Shape{6, 6, 1});
    return m;
  }();
  // A child that loops is stopped well within libFuzzer's own -timeout (10 s in run.sh).
  const saving::IsolationLimits limits{.wall_seconds = 5, .cpu_seconds = 2};
  try {
    saving::set_weights_from(*model, saving::read_weights_h5({data, size}, "fuzz.weights.h5", limits), "fuzz.weights.h5");
  } catch (const DataError&) {
  }
  return 0;
}
