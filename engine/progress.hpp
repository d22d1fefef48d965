// A Keras-3-style progress bar:
//   Epoch 1/2
//   1875/1875 ━━━━━━━━━━━━━━━━━━━━ 3s 1ms/step - accuracy: 0.8604 - loss: 0.4783
// Updated in place (carriage return, colours) on a terminal; one line per epoch otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace mirror {

class ProgressBar {
 public:
  using Values = std::vector<std::pair<std::string, double>>;  // printed sorted by name, as Keras does

  // `interactive`: redraw in place (a terminal); otherwise print only the final line.
  ProgressBar(int64_t target_steps, std::ostream& out, bool interactive);

  // After step `current` (1-based) with the running values. Redraws at most every 50 ms.
  void update(int64_t current, const Values& values);
  // Prints the final line (with `extra`, e.g. " - 41234 samples/s", appended) and a newline.
  void finish(const Values& values, const std::string& extra = "");

  // The line as it would be printed for step `current` after `elapsed_seconds` (no colours when
  // `colour` is false). Exposed for tests.
  std::string render(int64_t current, double elapsed_seconds, const Values& values, bool final_line,
                     bool colour) const;

  // True when `out` is the standard output or error and that is a terminal.
  static bool is_terminal(std::ostream& out);

 private:
  int64_t target_;
  std::ostream& out_;
  bool interactive_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  int64_t current_ = 0;
};

}  // namespace mirror
