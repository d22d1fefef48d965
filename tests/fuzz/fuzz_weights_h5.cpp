// libFuzzer target: the .weights.h5 reader (HDF5 through libhdf5) on arbitrary bytes, then
// loading what it read into a small model. DataError is a correct answer; anything else a finding.
#include <hdf5.h>

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
  try {
    saving::set_weights_from(*model, saving::read_weights_h5({data, size}, "fuzz.weights.h5"), "fuzz.weights.h5");
  } catch (const DataError&) {
  }
  // libhdf5 keeps what damaged files made it allocate on its free lists; over thousands of inputs
  // that grows past the fuzzer's memory limit without being a leak of Mirror's.
  H5garbage_collect();
  return 0;
}
