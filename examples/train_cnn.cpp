// The reference job: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) -> Flatten -> Dense(classes, softmax),
// Adam, batch 32, on Fashion-MNIST (or any directory of MNIST-format IDX files), through whatever
// strategy this machine supports. Exit codes: 0 success, 1 runtime failure, 2 bad usage,
// 130 / 143 stopped by SIGINT / SIGTERM after a training step (with --backup-dir, a backup of it was
// written), or after training, while evaluating or saving (the message says what was saved).
#include "examples/example_common.hpp"

using namespace mirror;

int main(int argc, char** argv) {
  return example::main_with(argc, argv, "train_cnn", {.epochs = 2, .batch_size = 32}, [](const example::Flags& f) {
    auto strategy = example::make_strategy_from(f);
    const Dataset data = example::load_data(f);
    Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, data.train.sample_shape()),
                      layers::MaxPooling2D({2, 2}),
                      layers::Flatten(),
                      layers::Dense(f.classes, Activation::Softmax)});
    model.compile(*strategy, example::make_optimizer(f, f.epochs * example::steps_per_epoch(f, data)),
                  losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, f.seed);
    return example::fit_and_report(model, *strategy, data, f);
  });
}
