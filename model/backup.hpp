// fit's backups (FitOptions::backup_dir, Keras's BackupAndRestore), private to model/: the
// directory of backups and what a backup holds beyond the model (where the run was). The signals
// that end a fit after its current step are engine/signal_catcher.hpp's.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "mirror/engine/signal_catcher.hpp"
#include "mirror/model/callbacks.hpp"
#include "mirror/model/history.hpp"
#include "mirror/model/saving/checkpoint.hpp"

namespace mirror {

// Where a run is: the epoch in progress and how far into it.
struct FitProgress {
  int epoch = 1;               // 1-based; epochs before it are in `history`
  int64_t step = 0;            // steps of `epoch` done
  int64_t seen = 0;            // samples of `epoch` done
  double seconds = 0;          // time spent in `epoch` so far
  std::vector<float> totals;   // the runtime's running totals after `step` (empty when step is 0)
  bool stopped = false;        // a callback asked fit to stop
  History history;
};

// What must match for a backup to continue this fit: a backup of another run would silently train
// on other batches.
struct FitIdentity {
  int64_t batch_size = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t train_rows = 0;
  int64_t steps = 0;  // per epoch
};

// Adds `progress`, `identity` and every callback's state to `checkpoint`.
void capture_fit(const FitProgress& progress, const FitIdentity& identity, const std::vector<CallbackPtr>& callbacks,
                 saving::Checkpoint& checkpoint);
// Throws InvalidArgument when `checkpoint` was taken by a fit with another identity or callbacks,
// DataError when its fit part is damaged; changes nothing.
// `totals`: the runtime's running totals' width (a backup within an epoch carries them).
void check_fit(const saving::Checkpoint& checkpoint, const FitIdentity& identity, size_t callbacks, size_t totals,
               const std::string& source);
// The progress in `checkpoint`, and each callback's state given back (after check_fit).
FitProgress restore_fit(const saving::Checkpoint& checkpoint, const std::vector<CallbackPtr>& callbacks,
                        const std::string& source);

// A directory of backups named by the iteration they were taken at (backup-000000001234.ckpt).
class BackupDir {
 public:
  // Creates `path` if needed and checks at once that a file can be written there (InvalidArgument
  // naming the reason otherwise); removes temporary files a killed writer left.
  BackupDir(std::string path, int keep);

  // The newest backup that reads, with its file name; a damaged one, or one larger than
  // `max_bytes` (saving::checkpoint_limit), is reported on `out` and the one before it is used;
  // such a file costs its first bytes, not its size. nullopt when there is none.
  std::optional<std::pair<saving::Checkpoint, std::string>> newest(std::ostream& out, size_t max_bytes) const;
  // Writes atomically, then removes all but the newest `keep`.
  void write(const saving::Checkpoint& checkpoint, int64_t iteration);
  void remove_all();
  const std::string& path() const { return path_; }

 private:
  std::vector<std::pair<int64_t, std::string>> list() const;  // (iteration, file) newest first

  std::string path_;
  int keep_;
};

}  // namespace mirror
