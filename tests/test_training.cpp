// A short real training run on a Fashion-MNIST subset (Debian's dataset-fashion-mnist, or the
// directory in MIRROR_DATA_DIR): the reference CNN must beat chance (10%) by a wide margin, with
// one and with two host replicas.
#include <gtest/gtest.h>

#include "mirror/mirror.hpp"

namespace mirror {
namespace {

double train_and_test(int replicas) {
  static const Dataset data = data::load_idx_dataset();
  const ImageSet train = data.train.head(6000), test = data.test.head(2000);
  HostStrategy strategy(replicas);
  Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, train.sample_shape()), layers::MaxPooling2D({2, 2}),
                    layers::Flatten(), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), {}, {metrics::Accuracy()}, 42);
  const History history = model.fit(train, {.epochs = 1, .batch_size = 32, .seed = 42, .verbose = 2});
  EXPECT_LT(history.epochs[0].loss, 1.0);
  return model.evaluate(test, {.verbose = 0}).accuracy;
}

TEST(Training, ReferenceCnnLearnsFashionMnist) { EXPECT_GT(train_and_test(1), 0.70); }

TEST(Training, TwoReplicasLearnAsWell) { EXPECT_GT(train_and_test(2), 0.70); }

}  // namespace
}  // namespace mirror
