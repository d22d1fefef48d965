// ResNet-20 (He et al.'s CIFAR ResNet: three stages of 16/32/64 channels, three residual blocks
// each, batch normalization, ReLU, global average pooling) on Fashion-MNIST, with the same flags
// as train_cnn. Batch normalization is synchronized across replicas by default (--sync-bn 1), so
// the run does not depend on how many replicas share the batch. Adam with a cosine decay of the
// learning rate over the run, batch 128, 10 epochs (0.92+ on Fashion-MNIST's test set, README).
// Exit codes: 0 success, 1 runtime failure, 2 bad usage,
// 130 / 143 stopped by SIGINT / SIGTERM after a training step (with --backup-dir, a backup of it was
// written), or after training, while evaluating or saving (the message says what was saved).
#include "examples/example_common.hpp"

using namespace mirror;

int main(int argc, char** argv) {
  return example::main_with(argc, argv, "train_resnet", {.epochs = 10, .batch_size = 128, .schedule = "cosine"}, [](const example::Flags& f) {
    auto strategy = example::make_strategy_from(f);
    const Dataset data = example::load_data(f);
    auto model = applications::CifarResNet(20, data.train.sample_shape(), f.classes, f.sync_bn);
    model->compile(*strategy, example::make_optimizer(f, f.epochs * example::steps_per_epoch(f, data)),
                   losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, f.seed);
    return example::fit_and_report(*model, *strategy, data, f);
  });
}
