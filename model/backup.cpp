// fit's backups (backup.hpp).
#include "mirror/model/backup.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <ostream>

#include "mirror/engine/error.hpp"
#include "mirror/model/saving.hpp"
#include "mirror/model/saving/keras_format.hpp"

namespace mirror {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPrefix = "backup-";
constexpr const char* kSuffix = ".ckpt";

// The per-epoch numbers of a History, flattened: loss, accuracy, seconds, samples/s, val_loss,
// val_accuracy (0 when absent), then `values`.
constexpr size_t kFixedNumbers = 6;

std::string callback_key(size_t i, const char* part) { return str("callback/", i, "/", part); }

// The iteration in "backup-000000001234.ckpt", or -1 for any other name.
int64_t iteration_of(const std::string& name) {
  const size_t prefix = std::strlen(kPrefix), suffix = std::strlen(kSuffix);
  if (name.size() <= prefix + suffix || name.rfind(kPrefix, 0) != 0 ||
      name.compare(name.size() - suffix, suffix, kSuffix) != 0)
    return -1;
  const std::string digits = name.substr(prefix, name.size() - prefix - suffix);
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

}  // namespace

void capture_fit(const FitProgress& p, const FitIdentity& id, const std::vector<CallbackPtr>& callbacks,
                 saving::Checkpoint& checkpoint) {
  nlohmann::json history = nlohmann::json::array();
  std::vector<double> numbers;
  for (const EpochLog& e : p.history.epochs) {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [name, value] : e.values) names.push_back(name);
    history.push_back({{"epoch", e.epoch}, {"names", names}, {"val_loss", e.val_loss.has_value()},
                       {"val_accuracy", e.val_accuracy.has_value()}});
    numbers.insert(numbers.end(), {e.loss, e.accuracy, e.seconds, e.samples_per_second, e.val_loss.value_or(0.0),
                                   e.val_accuracy.value_or(0.0)});
    for (const auto& [name, value] : e.values) numbers.push_back(value);
  }
  checkpoint.header["fit"] = {
      {"epoch", p.epoch},
      {"step", p.step},
      {"seen", p.seen},
      {"stopped", p.stopped},
      {"identity",
       {{"batch_size", id.batch_size}, {"seed", id.seed}, {"shuffle", id.shuffle}, {"train_rows", id.train_rows},
        {"steps", id.steps}}},
      {"history", history},
      {"callbacks", callbacks.size()}};
  checkpoint.doubles["fit/history"] = std::move(numbers);
  checkpoint.doubles["fit/seconds"] = {p.seconds};
  checkpoint.floats["fit/totals"] = p.totals;
  for (size_t i = 0; i < callbacks.size(); ++i) {
    CallbackState state = callbacks[i]->state();
    checkpoint.doubles[callback_key(i, "numbers")] = std::move(state.numbers);
    checkpoint.floats[callback_key(i, "floats")] = std::move(state.floats);
  }
}

void check_fit(const saving::Checkpoint& checkpoint, const FitIdentity& id, size_t callbacks, size_t totals,
               const std::string& source) {
  try {
    const nlohmann::json& fit = checkpoint.header.at("fit");
    const nlohmann::json& theirs = fit.at("identity");
    const auto same = [&](const char* key, const auto& mine) {
      using T = std::decay_t<decltype(mine)>;
      const T value = theirs.at(key).get<T>();
      MIRROR_REQUIRE(value == mine, InvalidArgument, "the backup ", source, " was taken by a fit with ", key, " = ",
                     value, ", but this fit has ", key, " = ", mine,
                     ": run it with the options of the run it continues, or give another backup_dir");
    };
    same("batch_size", id.batch_size);
    same("seed", id.seed);
    same("shuffle", id.shuffle);
    same("train_rows", id.train_rows);
    same("steps", id.steps);
    const auto theirs_callbacks = fit.at("callbacks").get<size_t>();
    MIRROR_REQUIRE(theirs_callbacks == callbacks, InvalidArgument, "the backup ", source, " was taken by a fit with ",
                   theirs_callbacks, " callbacks, but this fit has ", callbacks);
    const auto epoch = fit.at("epoch").get<int>();
    const auto step = fit.at("step").get<int64_t>();
    MIRROR_REQUIRE(epoch >= 1 && step >= 0 && step < id.steps && fit.at("seen").get<int64_t>() >= 0 &&
                       fit.at("history").is_array() && fit.at("history").size() == static_cast<size_t>(epoch - 1),
                   DataError, source, ": its fit progress is not valid (epoch ", epoch, ", step ", step, ")");
    size_t numbers = 0;
    for (const nlohmann::json& e : fit.at("history")) numbers += kFixedNumbers + e.at("names").size();
    const size_t saved_totals = checkpoint.f32("fit/totals", source).size();
    MIRROR_REQUIRE(saved_totals == (step > 0 ? totals : 0), DataError, source, ": it holds ", saved_totals,
                   " running totals; a fit of this model keeps ", totals);
    MIRROR_REQUIRE(checkpoint.f64("fit/history", source).size() == numbers &&
                       checkpoint.f64("fit/seconds", source).size() == 1,
                   DataError, source, ": its history does not match its header");
    for (size_t i = 0; i < callbacks; ++i) {
      checkpoint.f64(callback_key(i, "numbers"), source);
      checkpoint.f32(callback_key(i, "floats"), source);
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(str(source, ": the backup's fit progress is not valid (", e.what(), ")"));
  }
}

FitProgress restore_fit(const saving::Checkpoint& checkpoint, const std::vector<CallbackPtr>& callbacks,
                        const std::string& source) {
  const nlohmann::json& fit = checkpoint.header.at("fit");
  FitProgress p;
  p.epoch = fit.at("epoch").get<int>();
  p.step = fit.at("step").get<int64_t>();
  p.seen = fit.at("seen").get<int64_t>();
  p.stopped = fit.at("stopped").get<bool>();
  p.seconds = checkpoint.f64("fit/seconds", source)[0];
  p.totals = checkpoint.f32("fit/totals", source);
  const std::vector<double>& numbers = checkpoint.f64("fit/history", source);
  size_t next = 0;
  for (const nlohmann::json& e : fit.at("history")) {
    EpochLog log;
    log.epoch = e.at("epoch").get<int>();
    const double* n = numbers.data() + next;
    log.loss = n[0];
    log.accuracy = n[1];
    log.seconds = n[2];
    log.samples_per_second = n[3];
    if (e.at("val_loss").get<bool>()) log.val_loss = n[4];
    if (e.at("val_accuracy").get<bool>()) log.val_accuracy = n[5];
    next += kFixedNumbers;
    for (const nlohmann::json& name : e.at("names")) log.values.push_back({name.get<std::string>(), numbers[next++]});
    p.history.epochs.push_back(std::move(log));
  }
  for (size_t i = 0; i < callbacks.size(); ++i)
    callbacks[i]->restore_state({.numbers = checkpoint.f64(callback_key(i, "numbers"), source),
                                 .floats = checkpoint.f32(callback_key(i, "floats"), source)});
  return p;
}

BackupDir::BackupDir(std::string path, int keep) : path_(std::move(path)), keep_(keep) {
  MIRROR_REQUIRE(!path_.empty(), InvalidArgument, "backup_dir is empty");
  MIRROR_REQUIRE(keep_ >= 1, InvalidArgument, "backup_keep must be at least 1, got ", keep_);
  std::error_code error;
  fs::create_directories(path_, error);
  MIRROR_REQUIRE(fs::is_directory(path_), InvalidArgument, "backup_dir ", path_, " cannot be created: ",
                 error ? error.message() : std::string("a file of that name exists"));
  const std::string probe = (fs::path(path_) / str(".probe-", ::getpid())).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MIRROR_REQUIRE(fd >= 0, InvalidArgument, "backup_dir ", path_, " is not writable: ", std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
  // A writer killed mid-write leaves ".backup-....ckpt.tmp-<pid>" (write_file_atomically's name).
  for (const fs::directory_entry& entry : fs::directory_iterator(path_)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(str(".", kPrefix), 0) == 0 && name.find(".tmp-") != std::string::npos) fs::remove(entry.path(), error);
  }
}

std::vector<std::pair<int64_t, std::string>> BackupDir::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  for (const fs::directory_entry& entry : fs::directory_iterator(path_)) {
    const int64_t iteration = iteration_of(entry.path().filename().string());
    if (iteration >= 0 && entry.is_regular_file()) found.push_back({iteration, entry.path().string()});
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  return found;
}

std::optional<std::pair<saving::Checkpoint, std::string>> BackupDir::newest(std::ostream& out, size_t max_bytes) const {
  for (const auto& [iteration, file] : list()) {
    try {
      return std::pair{saving::read_checkpoint(file, max_bytes), file};
    } catch (const DataError& e) {
      out << "Mirror: skipping a backup that cannot be read: " << e.what() << '\n';
    }
  }
  return std::nullopt;
}

void BackupDir::write(const saving::Checkpoint& checkpoint, int64_t iteration) {
  char name[64];
  std::snprintf(name, sizeof name, "%s%012lld%s", kPrefix, static_cast<long long>(iteration), kSuffix);
  saving::write_file_atomically((fs::path(path_) / name).string(), saving::encode_checkpoint(checkpoint));
  const auto found = list();
  std::error_code error;
  for (size_t i = static_cast<size_t>(keep_); i < found.size(); ++i) fs::remove(found[i].second, error);
}

void BackupDir::remove_all() {
  std::error_code error;
  for (const auto& [iteration, file] : list()) fs::remove(file, error);
}

void saving::remove_backups(const std::string& backup_dir) {
  if (fs::is_directory(backup_dir)) BackupDir(backup_dir, 1).remove_all();
}

}  // namespace mirror
