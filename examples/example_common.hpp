// What the example programs share: their flags, the strategy they ask for, the data they load,
// the metrics JSON they write, and how main turns exceptions into exit codes (0 success, 1 runtime
// failure, 2 bad usage). Each program adds only its model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mirror.hpp"

namespace mirror::example {

struct Flags {
  std::string data = data::default_data_dir().string();
  int epochs = 2;
  int64_t batch_size = 32;
  std::string strategy = "auto";
  int replicas = 1;
  int threads = 0;
  std::vector<int> devices = {};
  int replicas_per_gpu = 1;
  bool require_gpu = false;
  bool sync_bn = true;
  uint64_t seed = 42;
  float learning_rate = 1e-3f;
  int64_t classes = 10;
  int64_t train_samples = 0;  // 0 = all
  int verbose = 1;
  std::string metrics_json = "";
};

// The flags both examples take; `defaults` gives each program its own defaults.
inline const char* kUsageFlags = R"(
  --data DIR             MNIST-format IDX files (default $MIRROR_DATA_DIR, else
                         /usr/share/datasets/fashion-mnist)
  --epochs N             (default: the program's)
  --batch-size N         global batch size (default: the program's)
  --strategy S           auto | host | one-device | mirrored (default auto)
  --replicas N           host strategy: replicas (default 1)
  --threads N            host strategy: threads in all (default: every core)
  --devices 0,1          GPUs to use (default: all visible)
  --replicas-per-gpu K   logical replicas on each GPU (default 1)
  --require-gpu          fail instead of falling back to the CPU (also MIRROR_REQUIRE_GPU=1)
  --seed N               weights and shuffling seed (default 42)
  --learning-rate X      Adam's learning rate (default 0.001)
  --sync-bn 0|1          synchronized batch normalization (models that have it; default 1)
  --classes N            units of the last layer (default 10)
  --train-samples N      train on the first N samples only (default: all)
  --verbose N            0 silent, 1 progress bar, 2 one line per epoch and the
                         algorithms cuDNN chose (default 1)
  --metrics-json PATH    write the strategy, devices, per-epoch and test metrics as JSON
)";

template <typename T>
inline T parse_number(const std::string& flag, const std::string& text) {
  T value{};
  std::istringstream in(text);
  in >> value;
  MIRROR_REQUIRE(in && in.eof(), InvalidArgument, "flag ", flag, " needs a number, got '", text, "'");
  return value;
}

inline std::vector<int> parse_list(const std::string& flag, const std::string& text) {
  std::vector<int> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) values.push_back(parse_number<int>(flag, item));
  return values;
}

inline std::string usage(const std::string& program) { return "usage: " + program + " [flags]" + kUsageFlags; }

// Parses argv over `f` (the program's defaults). --help prints the usage and exits 0.
inline Flags parse_flags(int argc, char** argv, const std::string& program, Flags f) {
  const std::string kUsage = usage(program);
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag == "--require-gpu") {
      f.require_gpu = true;
      continue;
    }
    MIRROR_REQUIRE(i + 1 < argc, InvalidArgument, "flag ", flag, " needs a value\n", kUsage);
    const std::string v = argv[++i];
    if (flag == "--data") f.data = v;
    else if (flag == "--epochs") f.epochs = parse_number<int>(flag, v);
    else if (flag == "--batch-size") f.batch_size = parse_number<int64_t>(flag, v);
    else if (flag == "--strategy") f.strategy = v;
    else if (flag == "--replicas") f.replicas = parse_number<int>(flag, v);
    else if (flag == "--threads") f.threads = parse_number<int>(flag, v);
    else if (flag == "--devices") f.devices = parse_list(flag, v);
    else if (flag == "--replicas-per-gpu") f.replicas_per_gpu = parse_number<int>(flag, v);
    else if (flag == "--seed") f.seed = parse_number<uint64_t>(flag, v);
    else if (flag == "--learning-rate") f.learning_rate = parse_number<float>(flag, v);
    else if (flag == "--classes") f.classes = parse_number<int64_t>(flag, v);
    else if (flag == "--train-samples") f.train_samples = parse_number<int64_t>(flag, v);
    else if (flag == "--verbose") f.verbose = parse_number<int>(flag, v);
    else if (flag == "--metrics-json") f.metrics_json = v;
    else if (flag == "--sync-bn") f.sync_bn = parse_number<int>(flag, v) != 0;
    else throw InvalidArgument(str("unknown flag ", flag, "\n", kUsage));
  }
  MIRROR_REQUIRE(f.classes >= 2, InvalidArgument, "--classes must be at least 2, got ", f.classes);
  MIRROR_REQUIRE(f.epochs >= 1, InvalidArgument, "--epochs must be at least 1, got ", f.epochs);
  return f;
}

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// Written to PATH.tmp and renamed, so a crash never leaves half a file where a result was.
inline void write_metrics(const std::string& path, const Strategy& strategy, const History& history, const EvaluateResult& test) {
  std::ostringstream j;
  j << "{\n  \"strategy\": " << json_string(strategy.name()) << ",\n  \"replicas\": " << strategy.num_replicas()
    << ",\n  \"devices\": [";
  const auto devices = strategy.devices();
  for (size_t i = 0; i < devices.size(); ++i) j << (i ? ", " : "") << json_string(devices[i].name());
  j << "],\n  \"epochs\": [";
  for (size_t i = 0; i < history.epochs.size(); ++i) {
    const EpochLog& e = history.epochs[i];
    j << (i ? "," : "") << "\n    {\"epoch\": " << e.epoch << ", \"loss\": " << e.loss << ", \"accuracy\": " << e.accuracy
      << ", \"seconds\": " << e.seconds << ", \"samples_per_second\": " << e.samples_per_second << "}";
  }
  j << "\n  ],\n  \"test\": {\"loss\": " << test.loss << ", \"accuracy\": " << test.accuracy << "}\n}\n";
  const std::string tmp = path + ".tmp";
  std::ofstream file(tmp);
  file << j.str();
  file.close();
  MIRROR_REQUIRE(file, Error, "could not write ", tmp);
  std::filesystem::rename(tmp, path);
}

// The strategy the flags ask for (announced by make_strategy) and the data set, cut to
// --train-samples, with a line saying what was loaded.
inline std::unique_ptr<Strategy> make_strategy_from(const Flags& f) {
  set_verbosity(f.verbose);
  return make_strategy({.kind = f.strategy,
                        .require_gpu = f.require_gpu,
                        .host_replicas = f.replicas,
                        .host_threads = f.threads,
                        .gpu_indices = f.devices,
                        .replicas_per_gpu = f.replicas_per_gpu});
}

inline Dataset load_data(const Flags& f) {
  Dataset data = data::load_idx_dataset(f.data);
  if (f.train_samples > 0) data.train = data.train.head(f.train_samples);
  std::cout << "Data: " << data.train.count << " training and " << data.test.count << " test images of "
            << data.train.sample_shape() << " from " << f.data << '\n';
  return data;
}

// Trains `model` (compiled) as the flags say, evaluates it on the test set, prints the test
// accuracy and writes the metrics JSON.
inline int fit_and_report(Model& model, const Strategy& strategy, const Dataset& data, const Flags& f) {
  if (f.verbose > 0) model.summary();
  const History history = model.fit(data.train, {.epochs = f.epochs, .batch_size = f.batch_size, .seed = f.seed, .verbose = f.verbose});
  const EvaluateResult test = model.evaluate(data.test, {.verbose = f.verbose});
  std::cout << "Test accuracy: " << test.accuracy << "  test loss: " << test.loss << '\n';
  if (!f.metrics_json.empty()) write_metrics(f.metrics_json, strategy, history, test);
  return 0;
}

// main's body: runs `program_body` on the parsed flags and maps exceptions to exit codes.
inline int main_with(int argc, char** argv, const std::string& program, const Flags& defaults,
                     const std::function<int(const Flags&)>& program_body) {
  try {
    return program_body(parse_flags(argc, argv, program, defaults));
  } catch (const InvalidArgument& e) {
    std::cerr << program << ": " << e.what() << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << '\n';
    return 1;
  }
}

}  // namespace mirror::example
