// What the example programs share: their flags (parsed with CLI11, which writes --help), the strategy they ask for, the data they load,
// the metrics JSON they write, and how main turns exceptions into exit codes (0 success, 1 runtime
// failure, 2 bad usage, 128 + signal when SIGINT or SIGTERM stopped training). Each program adds only its model.
#pragma once

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "mirror/mirror.hpp"

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
  std::string optimizer = "adam";
  std::optional<float> learning_rate = {};  // unset: the optimizer's Keras default
  float momentum = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;           // unset for AdamW: its 0.004
  std::string schedule = "constant";
  int64_t warmup_steps = 0;
  float clipnorm = 0.0f;
  int early_stopping_patience = -1;    // -1: no early stopping
  std::string csv_log = "";
  double validation_split = 0.0;
  int64_t classes = 10;
  int64_t train_samples = 0;  // 0 = all
  int verbose = 1;
  std::string metrics_json = "";
  std::string trace = "";              // Chrome trace-event file of the fit's steps
  std::string save = "";               // .keras or .weights.h5, written after training
  std::string load = "";               // .keras or .weights.h5, read before training
  std::string backup_dir = "";
  int64_t backup_every_steps = 0;
  double backup_every_seconds = 0;
  // seconds a collective may wait for another worker
  double collective_timeout = std::chrono::duration<double>(kDefaultCollectiveTimeout).count();
  bool fast_sums = false;              // multi-worker: MPI's order, not bitwise one process's
};

// IDX label files hold unsigned bytes, so no label reaches 256: a larger last layer could never be
// trained to use its extra units, and a vast one only runs out of memory after the data loaded.
inline constexpr int64_t kMaxClasses = 256;

// What the program is doing, for the message main_with prints when memory runs out.
inline std::string& current_step() {
  static std::string step = "reading the flags";
  return step;
}

// Refuses a PATH given to `flag` that the program could not write at the end of its run: PATH a
// directory, its directory missing, or no file can be made there (tried with a probe file that
// mkstemp names uniquely, removed at once). `in_place`: the file is opened where it is, not
// renamed over, so an existing PATH must be writable too. Throws InvalidArgument with the reason.
inline void check_output_path(const std::string& flag, const std::string& path, bool in_place) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  std::error_code ec;
  const std::string what = flag + " " + path;
  MIRROR_REQUIRE(!fs::is_directory(path, ec), InvalidArgument, what, ": that is a directory; give the path of a file");
  const fs::path dir = fs::absolute(path, ec).parent_path();
  MIRROR_REQUIRE(fs::exists(dir, ec), InvalidArgument, what, ": the directory ", dir.string(), " does not exist");
  MIRROR_REQUIRE(fs::is_directory(dir, ec), InvalidArgument, what, ": ", dir.string(), " is not a directory");
  std::string probe = (dir / ("." + fs::path(path).filename().string() + ".probe-XXXXXX")).string();
  const int fd = ::mkstemp(probe.data());
  const int err = errno;
  MIRROR_REQUIRE(fd >= 0, InvalidArgument, what, ": cannot create a file in ", dir.string(), ": ", std::strerror(err));
  ::close(fd);
  ::unlink(probe.c_str());
  if (in_place && fs::exists(path, ec)) {
    const bool writable = ::access(path.c_str(), W_OK) == 0;
    const int access_err = errno;
    MIRROR_REQUIRE(writable, InvalidArgument, what, ": cannot write to it: ", std::strerror(access_err));
  }
}

// Refuses flag combinations that make no sense, before any data is read. Throws InvalidArgument.
inline void check_flags(const Flags& f) {
  const bool has_momentum = f.optimizer == "sgd" || f.optimizer == "rmsprop";
  MIRROR_REQUIRE(f.momentum == 0 || has_momentum, InvalidArgument, "--momentum applies to --optimizer sgd or rmsprop, not ",
                 f.optimizer);
  MIRROR_REQUIRE(!f.nesterov || (f.optimizer == "sgd" && f.momentum > 0), InvalidArgument,
                 "--nesterov needs --optimizer sgd and a --momentum above 0");
  MIRROR_REQUIRE(f.warmup_steps == 0 || f.schedule == "cosine", InvalidArgument,
                 "--warmup-steps applies to --schedule cosine only");
  MIRROR_REQUIRE(f.early_stopping_patience < 0 || f.validation_split > 0, InvalidArgument,
                 "--early-stopping-patience monitors val_loss, so it needs --validation-split");
  check_output_path("--csv-log", f.csv_log, true);
  check_output_path("--metrics-json", f.metrics_json, false);
  check_output_path("--trace", f.trace, false);
  const auto keras_file = [](const std::string& path) {
    return path.ends_with(".keras") || path.ends_with(".weights.h5");
  };
  MIRROR_REQUIRE(f.save.empty() || keras_file(f.save), InvalidArgument, "--save ", f.save,
                 ": the file must end in .keras (the whole model) or .weights.h5 (its weights)");
  check_output_path("--save", f.save, false);
  if (!f.load.empty()) {
    MIRROR_REQUIRE(keras_file(f.load), InvalidArgument, "--load ", f.load,
                   ": Mirror loads weights from a .keras or .weights.h5 file");
    std::ifstream file(f.load, std::ios::binary);
    const int err = errno;
    MIRROR_REQUIRE(file.is_open() && !std::filesystem::is_directory(f.load), InvalidArgument, "--load ", f.load,
                   ": cannot read it: ", std::filesystem::is_directory(f.load) ? "it is a directory" : std::strerror(err));
  }
  MIRROR_REQUIRE(!f.backup_dir.empty() || (f.backup_every_steps == 0 && f.backup_every_seconds == 0), InvalidArgument,
                 "--backup-every-steps and --backup-every-seconds need --backup-dir");
  if (!f.backup_dir.empty()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(f.backup_dir, ec)) {
      MIRROR_REQUIRE(fs::is_directory(f.backup_dir, ec), InvalidArgument, "--backup-dir ", f.backup_dir,
                     ": that is a file, not a directory");
      const bool writable = ::access(f.backup_dir.c_str(), W_OK) == 0;
      const int err = errno;
      MIRROR_REQUIRE(writable, InvalidArgument, "--backup-dir ", f.backup_dir, ": cannot write there: ", std::strerror(err));
    } else {
      const fs::path parent = fs::absolute(f.backup_dir, ec).parent_path();
      MIRROR_REQUIRE(fs::is_directory(parent, ec), InvalidArgument, "--backup-dir ", f.backup_dir, ": the directory ",
                     parent.string(), " does not exist");
    }
  }
  MIRROR_REQUIRE(f.classes >= 2 && f.classes <= kMaxClasses, InvalidArgument, "--classes must be in [2, ", kMaxClasses,
                 "], got ", f.classes, ": IDX label files hold bytes, so labels run from 0 to ", kMaxClasses - 1);
}

// A CLI11 check that the value is a number above `low` (or at least `low` when `inclusive`), with a
// message that says which.
inline CLI::Validator number_above(double low, bool inclusive) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "needs a number, got '" + text + "'";
        if (inclusive ? value >= low : value > low) return "";
        return str("must be ", inclusive ? "at least " : "above ", low, ", got ", text);
      },
      str(inclusive ? ">= " : "> ", low));
}

// A CLI11 check that a count of host threads or replicas is at most host_thread_limit(), the
// bound HostStrategy enforces too; the message names the limit and where it comes from.
inline CLI::Validator at_most_host_thread_limit() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "needs a number, got '" + text + "'";
        const int limit = host_thread_limit();
        if (value <= limit) return "";
        return str("must be at most ", limit, " (", kHostThreadsPerHardwareThread, " x this machine's ",
                   host_thread_count(), " hardware threads; past the cores threads only take turns), got ", text);
      },
      str("<= ", host_thread_limit()));
}

// Parses argv over `f` (the program's defaults) with CLI11. Returns nullopt with `exit_code` set
// when the program should exit now: 0 after --help, 2 for a flag CLI11 refused (its message printed).
inline std::optional<Flags> parse_flags(int argc, char** argv, const std::string& program, Flags f, int& exit_code) {
  CLI::App app{program + ": trains on MNIST-format IDX files through a Mirror strategy", program};
  app.add_option("--data", f.data, "directory of MNIST-format IDX files ($MIRROR_DATA_DIR, else Fashion-MNIST)")
      ->capture_default_str();
  app.add_option("--epochs", f.epochs, "epochs")->capture_default_str()->check(number_above(0, false));
  app.add_option("--batch-size", f.batch_size, "global batch size, split across the replicas")
      ->capture_default_str()
      ->check(number_above(0, false));
  app.add_option("--strategy", f.strategy, "auto | host | one-device | mirrored | multi-worker (under mpirun or srun)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "host", "one-device", "mirrored", "multi-worker"}));
  app.add_option("--replicas", f.replicas, "host and multi-worker strategies: replicas (per worker)")
      ->capture_default_str()
      ->check(number_above(0, false))
      ->check(at_most_host_thread_limit());
  app.add_option("--collective-timeout", f.collective_timeout,
                 "multi-worker: seconds a collective waits for another worker before the job fails (a stopped "
                 "or hung worker ends the job this long after; raise it when the chief's backups take longer to write)")
      ->capture_default_str()
      ->check(number_above(0, false));
  app.add_flag("--fast-sums", f.fast_sums,
               "multi-worker: sum across workers in MPI's order (not bitwise the results of one process)");
  app.add_option("--threads", f.threads,
                 str("host strategy: threads in all (0 = every core; at most ", kHostThreadsPerHardwareThread,
                     " x the cores)"))
      ->capture_default_str()
      ->check(number_above(0, true))
      ->check(at_most_host_thread_limit());
  app.add_option("--devices", f.devices, "GPUs to use, e.g. 0,1 (default: all visible)")
      ->delimiter(',')
      ->check(number_above(0, true));
  app.add_option("--replicas-per-gpu", f.replicas_per_gpu, "logical replicas on each GPU")
      ->capture_default_str()
      ->check(number_above(0, false));
  app.add_flag("--require-gpu", f.require_gpu, "fail instead of falling back to the CPU (also MIRROR_REQUIRE_GPU=1)");
  app.add_option("--seed", f.seed, "weights and shuffling seed")->capture_default_str()->check(number_above(0, true));
  app.add_option("--optimizer", f.optimizer, "sgd | adam | adamw | rmsprop (Keras 3's rules and defaults)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "adam", "adamw", "rmsprop"}));
  app.add_option("--learning-rate", f.learning_rate, "peak learning rate (default: the optimizer's Keras default)")
      ->check(number_above(0, false));
  app.add_option("--momentum", f.momentum, "sgd, rmsprop: momentum")->check(CLI::Range(0.0f, 1.0f));
  app.add_flag("--nesterov", f.nesterov, "sgd: Nesterov momentum");
  app.add_option("--weight-decay", f.weight_decay, "decoupled weight decay (adamw: default 0.004); biases and "
                                                   "batch-normalization parameters are excluded")
      ->check(number_above(0, true));
  app.add_option("--schedule", f.schedule, "constant | exponential (x0.1 over the run) | cosine (to 0 over the run)")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "exponential", "cosine"}));
  app.add_option("--warmup-steps", f.warmup_steps, "cosine: linear warm-up from 0 over this many steps")
      ->check(number_above(0, true));
  app.add_option("--clipnorm", f.clipnorm, "clip the all-reduced gradient to this global L2 norm")
      ->check(number_above(0, false));
  app.add_option("--early-stopping-patience", f.early_stopping_patience,
                 "stop after this many epochs without a better val_loss, restoring the best weights")
      ->check(number_above(0, true));
  app.add_option("--csv-log", f.csv_log, "write one CSV row of metrics per epoch to PATH");
  app.add_option("--validation-split", f.validation_split, "hold out this fraction of the training samples")
      ->check(CLI::Range(0.0, 0.99));
  app.add_option("--sync-bn", f.sync_bn, "synchronized batch normalization (models that have it)")->capture_default_str();
  app.add_option("--classes", f.classes, str("units of the last layer (2 to ", kMaxClasses, ")"))->capture_default_str();
  app.add_option("--train-samples", f.train_samples, "train on the first N samples only (0 = all)")
      ->capture_default_str()
      ->check(number_above(0, true));
  app.add_option("--verbose", f.verbose, "0 silent, 1 progress bar, 2 one line per epoch and cuDNN's choices")
      ->capture_default_str()
      ->check(CLI::Range(0, 2));
  app.add_option("--metrics-json", f.metrics_json, "write the strategy, devices, per-epoch and test metrics as JSON");
  app.add_option("--trace", f.trace,
                 "write a timeline of the fit (each replica's layers, all-reduces, optimizer) as a Chrome trace-event "
                 "JSON file for Perfetto or chrome://tracing");
  app.add_option("--save", f.save, "after training, save the model (.keras) or its weights (.weights.h5) for Keras");
  app.add_option("--load", f.load, "before training, load weights from a .keras or .weights.h5 file (Keras's or Mirror's)");
  app.add_option("--backup-dir", f.backup_dir,
                 "back up the run there after every epoch; started again, continue from the newest backup");
  app.add_option("--backup-every-steps", f.backup_every_steps, "also back up every N steps")
      ->check(number_above(0, true));
  app.add_option("--backup-every-seconds", f.backup_every_seconds, "also back up every S seconds")
      ->check(number_above(0, true));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e) == 0 ? 0 : 2;  // prints the help, or the error and a hint
    return std::nullopt;
  }
  check_flags(f);
  return f;
}

// The optimizer the flags ask for; `total_steps` (epochs x batches per epoch) sizes the schedule.
inline OptimizerPtr make_optimizer(const Flags& f, int64_t total_steps) {
  const float peak = f.learning_rate.value_or(f.optimizer == "sgd" ? 0.01f : 0.001f);
  LearningRate rate = peak;
  if (f.schedule == "exponential") rate = schedules::ExponentialDecay(peak, std::max<int64_t>(total_steps, 1), 0.1f);
  if (f.schedule == "cosine") {
    MIRROR_REQUIRE(f.warmup_steps < total_steps, InvalidArgument, "--warmup-steps ", f.warmup_steps,
                   " leaves nothing of the run's ", total_steps, " steps to decay over");
    rate = f.warmup_steps > 0 ? schedules::CosineDecay(0.0f, total_steps - f.warmup_steps,
                                                       {.warmup_target = peak, .warmup_steps = f.warmup_steps})
                              : schedules::CosineDecay(peak, total_steps);
  }
  OptimizerCommon common{.weight_decay = f.weight_decay, .global_clipnorm = f.clipnorm,
                         .exclude_from_weight_decay = {"^bias$", "^gamma$", "^beta$"}};
  if (f.optimizer == "sgd")
    return optimizers::SGD({.learning_rate = rate, .momentum = f.momentum, .nesterov = f.nesterov, .common = common});
  if (f.optimizer == "rmsprop") return optimizers::RMSprop({.learning_rate = rate, .momentum = f.momentum, .common = common});
  if (f.optimizer == "adamw")
    return optimizers::AdamW({.learning_rate = rate, .weight_decay = f.weight_decay > 0 ? f.weight_decay : 0.004f,
                              .common = common});
  return optimizers::Adam({.learning_rate = rate, .common = common});
}

// The batches of one epoch fit will run on `data` (for the schedules' length).
inline int64_t steps_per_epoch(const Flags& f, const Dataset& data) {
  const auto train = static_cast<int64_t>(std::floor(double(data.train.count) * (1.0 - f.validation_split)));
  return (train + f.batch_size - 1) / std::max<int64_t>(f.batch_size, 1);
}

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

// Written beside PATH, synced and renamed, so a crash never leaves half a file where a result was;
// on failure the temporary file is removed and the message names the reason (throws DataError).
// FNV-1a (64 bits) of the weights' bytes: two runs that end with bitwise the same model print the same.
inline std::string weights_fingerprint(Model& model) {
  uint64_t hash = 0xcbf29ce484222325ull;
  const std::vector<float> weights = model.get_weights();
  const auto* bytes = reinterpret_cast<const uint8_t*>(weights.data());
  for (size_t i = 0; i < weights.size() * sizeof(float); ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

inline void write_metrics(const std::string& path, const Strategy& strategy, Model& model, const History& history,
                          const EvaluateResult& test) {
  std::ostringstream j;
  j << "{\n  \"strategy\": " << json_string(strategy.name()) << ",\n  \"replicas\": " << strategy.num_replicas()
    << ",\n  \"world_replicas\": " << strategy.world_replicas()
    << ",\n  \"devices\": [";
  const auto devices = strategy.devices();
  for (size_t i = 0; i < devices.size(); ++i) j << (i ? ", " : "") << json_string(devices[i].name());
  j << "],\n  \"epochs\": [";
  for (size_t i = 0; i < history.epochs.size(); ++i) {
    const EpochLog& e = history.epochs[i];
    j << (i ? "," : "") << "\n    {\"epoch\": " << e.epoch << ", \"loss\": " << e.loss << ", \"accuracy\": " << e.accuracy
      << ", \"seconds\": " << e.seconds << ", \"samples_per_second\": " << e.samples_per_second << "}";
  }
  const FitReport& r = history.report;
  j << "\n  ],\n  \"step_report\": {\"steps\": " << r.steps << ", \"step_seconds\": " << r.step_seconds
    << ", \"samples_per_second\": " << r.samples_per_second << ", \"replicas\": [";
  for (size_t i = 0; i < r.replicas.size(); ++i) {
    const ReplicaTimeShares& s = r.replicas[i];
    j << (i ? ", " : "") << "{\"replica\": " << s.replica << ", \"device\": " << json_string(s.device)
      << ", \"compute\": " << s.compute << ", \"all_reduce\": " << s.all_reduce << ", \"waiting\": " << s.waiting;
    if (s.device_utilisation) j << ", \"device_utilisation\": " << *s.device_utilisation;
    if (s.device_peak_memory_bytes) j << ", \"device_peak_memory_bytes\": " << *s.device_peak_memory_bytes;
    j << "}";
  }
  j << "]},\n  \"test\": {\"loss\": " << test.loss << ", \"accuracy\": " << test.accuracy << "},\n  \"weights_fnv1a64\": "
    << json_string(weights_fingerprint(model)) << "\n}\n";
  const std::string text = j.str();
  saving::write_file_atomically(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// The strategy the flags ask for (announced by make_strategy) and the data set, cut to
// --train-samples, with a line saying what was loaded.
inline std::unique_ptr<Strategy> make_strategy_from(const Flags& f) {
  set_verbosity(f.verbose);
  current_step() = "making the strategy";
  auto strategy = make_strategy({.kind = f.strategy,
                                 .require_gpu = f.require_gpu,
                                 .host_replicas = f.replicas,
                                 .host_threads = f.threads,
                                 .gpu_indices = f.devices,
                                 .replicas_per_gpu = f.replicas_per_gpu,
                                 .rank_order_sums = !f.fast_sums,
                                 .collective_timeout_ms = static_cast<int64_t>(f.collective_timeout * 1000)});
  // In a multi-worker job only the chief speaks on stdout (errors still reach stderr).
  if (!strategy->is_chief()) std::cout.setstate(std::ios::failbit);
  return strategy;
}

// Refuses data that training or the final evaluation would fail on, before any epoch runs: an empty
// set, images without pixels, test images of another shape than the training images, a label
// outside [0, --classes) in either set. Throws DataError naming the set and the problem.
inline void check_data(const Dataset& data, const Flags& f) {
  for (const auto& [set, name] : {std::pair{&data.train, "training set"}, std::pair{&data.test, "test set"}}) {
    MIRROR_REQUIRE(set->count > 0, DataError, "the ", name, " in ", f.data, " is empty");
    MIRROR_REQUIRE(set->sample_size() > 0, DataError, "the ", name, " in ", f.data, " has images of ", set->height,
                   " x ", set->width, " pixels; a model needs at least one");
    data::check_labels(*set, f.classes, name);
  }
  MIRROR_REQUIRE(data.test.sample_shape() == data.train.sample_shape(), DataError, "the test set in ", f.data,
                 " has images of ", data.test.sample_shape(), " but the training set's are ", data.train.sample_shape(),
                 ": the model takes one shape");
}

inline Dataset load_data(const Flags& f) {
  current_step() = "loading the data";
  Dataset data = data::load_idx_dataset(f.data);
  if (f.train_samples > 0) data.train = data.train.head(f.train_samples);
  std::cout << "Data: " << data.train.count << " training and " << data.test.count << " test images of "
            << data.train.sample_shape() << " from " << f.data << '\n';
  check_data(data, f);
  current_step() = "building the model";
  return data;
}

// The Interrupted for a signal taken after training, while `doing`: what became of the trained
// weights, and where a backup of them is (fit keeps its last one until the run's work is done).
inline Interrupted interrupted_after_fit(int signal, const std::string& doing, const Flags& f, bool saved) {
  std::string weights = saved            ? "the trained weights were saved to " + f.save
                        : f.save.empty() ? std::string("the trained weights were not saved (no --save)")
                                         : "the trained weights were not saved to " + f.save;
  if (!saved && !f.backup_dir.empty())
    weights += "; a backup of them is in " + f.backup_dir + ": run again with the same --backup-dir to finish without training";
  return Interrupted(signal, str(signal_name(signal), " while ", doing, "; ", weights));
}

// Trains `model` (compiled) as the flags say, evaluates it on the test set, prints the test
// accuracy and writes the metrics JSON. From the first step on, SIGINT and SIGTERM end the run at a
// safe point (after a training step, after a batch of the evaluation, after a whole file) with
// Interrupted, which says what was being done and what was saved.
inline int fit_and_report(Model& model, const Strategy& strategy, const Dataset& data, const Flags& f) {
  if (f.verbose > 0) model.summary();
  if (!f.load.empty()) {
    current_step() = "loading " + f.load;
    model.load_weights(f.load);
    std::cout << "Loaded the weights of " << f.load << '\n';
  }
  FitOptions fit{.epochs = f.epochs, .batch_size = f.batch_size, .seed = f.seed, .verbose = f.verbose,
                 .validation_split = f.validation_split, .backup_dir = f.backup_dir,
                 .backup_every_steps = f.backup_every_steps, .backup_every_seconds = f.backup_every_seconds,
                 .backup_keep_at_end = true, .stop_on_signals = true, .trace = f.trace};
  if (f.early_stopping_patience >= 0)
    fit.callbacks.push_back(
        callbacks::EarlyStopping({.patience = f.early_stopping_patience, .restore_best_weights = true, .verbose = 1}));
  // Files are the chief's to write: the other workers of a multi-worker job hold the same model.
  const bool chief = strategy.is_chief();
  if (!f.csv_log.empty() && chief) fit.callbacks.push_back(callbacks::CSVLogger(f.csv_log));
  current_step() = "training";
  // Outlives fit's own catcher, so a signal that arrives as fit returns is not lost.
  const SignalCatcher signals;
  const auto stop_if_signalled = [&](bool saved) {
    if (const int signal = signals.caught()) throw interrupted_after_fit(signal, current_step(), f, saved);
  };
  const History history = model.fit(data.train, fit);
  current_step() = "evaluating the test set";
  stop_if_signalled(false);
  EvaluateResult test;
  try {
    test = model.evaluate(data.test, {.verbose = f.verbose, .stop_on_signals = true});
  } catch (const Interrupted& e) {
    throw interrupted_after_fit(e.signal(), current_step(), f, false);
  }
  std::cout << "Test accuracy: " << test.accuracy << "  test loss: " << test.loss << '\n';
  stop_if_signalled(false);
  current_step() = "writing the metrics JSON";
  if (!f.metrics_json.empty() && chief) write_metrics(f.metrics_json, strategy, model, history, test);
  stop_if_signalled(false);
  if (!f.save.empty() && chief) {
    current_step() = "saving " + f.save;
    if (f.save.ends_with(".keras")) {
      model.save(f.save);
    } else {
      model.save_weights(f.save);
    }
    std::cout << "Saved " << f.save << '\n';
    stop_if_signalled(true);
  }
  // Only now is the run's work all done: until here a killed process resumes from the last backup.
  if (!f.backup_dir.empty() && chief) saving::remove_backups(f.backup_dir);
  return 0;
}

// Runs `program_body` on the parsed flags and maps exceptions to exit codes.
inline int main_body(int argc, char** argv, const std::string& program, const Flags& defaults,
                     const std::function<int(const Flags&)>& program_body) {
  // In a multi-worker job, which worker says it.
  const auto who = [&] {
    return MpiWorld::active() && MpiWorld::get().size() > 1 ? str(program, " (worker ", MpiWorld::get().rank(), ")")
                                                            : program;
  };
  try {
    int exit_code = 0;
    const std::optional<Flags> flags = parse_flags(argc, argv, program, defaults, exit_code);
    return flags ? program_body(*flags) : exit_code;
  } catch (const Interrupted& e) {
    std::cerr << who() << ": " << e.what() << '\n';
    return 128 + e.signal();  // as a shell reports a process a signal ended: 130 for SIGINT, 143 for SIGTERM
  } catch (const InvalidArgument& e) {
    std::cerr << who() << ": " << e.what() << '\n';
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << who() << ": out of memory while " << current_step() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << who() << ": " << e.what() << '\n';
    return 1;
  }
}

// main's body: runs `program_body` on the parsed flags and maps exceptions to exit codes. A worker
// of a multi-worker job that fails ends the whole job (MPI_Abort) after printing why, so that no
// other worker waits for it.
inline int main_with(int argc, char** argv, const std::string& program, const Flags& defaults,
                     const std::function<int(const Flags&)>& program_body) {
  const int code = main_body(argc, argv, program, defaults, program_body);
  if (code != 0) abort_job_if_multi_worker(code);
  return code;
}

}  // namespace mirror::example
