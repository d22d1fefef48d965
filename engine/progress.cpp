// The Keras-3-style progress bar: formatting copied from keras.utils.Progbar so that output from
// Mirror reads like the Keras output a user already knows.
#include "mirror/engine/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace mirror {
namespace {

constexpr int kBarWidth = 20;
constexpr const char* kBarChar = "\u2501";  // '━', as Keras 3 draws it
constexpr auto kRedrawInterval = std::chrono::milliseconds(50);

constexpr const char* kBold = "\x1b[1m";
constexpr const char* kGreen = "\x1b[32m";
constexpr const char* kDim = "\x1b[37m";
constexpr const char* kReset = "\x1b[0m";
constexpr const char* kClearToEnd = "\x1b[K";

std::string printf_string(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

int digit_count(int64_t n) {
  int digits = 1;
  while (n >= 10) {
    n /= 10;
    ++digits;
  }
  return digits;
}

// Keras formats the remaining time as "%ds", "%d:%02d" or "%d:%02d:%02d" (truncated seconds).
std::string format_eta(double eta_seconds) {
  const auto eta = static_cast<int64_t>(std::max(0.0, eta_seconds));
  char text[48];
  if (eta_seconds > 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", static_cast<long long>(eta / 3600),
                  static_cast<long long>((eta % 3600) / 60), static_cast<long long>(eta % 60));
  } else if (eta_seconds > 60) {
    std::snprintf(text, sizeof text, "%lld:%02lld", static_cast<long long>(eta / 60), static_cast<long long>(eta % 60));
  } else {
    std::snprintf(text, sizeof text, "%llds", static_cast<long long>(eta));
  }
  return text;
}

// Keras's Progbar._format_time: whole seconds, milliseconds or microseconds per step.
std::string format_time_per_step(double seconds_per_step) {
  if (seconds_per_step >= 1 || seconds_per_step == 0) return printf_string("%.0fs/step", seconds_per_step);
  if (seconds_per_step >= 1e-3) return printf_string("%.0fms/step", seconds_per_step * 1e3);
  return printf_string("%.0fus/step", seconds_per_step * 1e6);
}

// Keras prints averages with %.4f, switching to %.4e for tiny magnitudes so they do not read 0.
std::string format_value(double value) {
  return printf_string(std::abs(value) > 1e-3 ? "%.4f" : "%.4e", value);
}

}  // namespace

ProgressBar::ProgressBar(int64_t target_steps, std::ostream& out, bool interactive)
    : target_(target_steps), out_(out), interactive_(interactive), start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::render(int64_t current, double elapsed_seconds, const Values& values, bool final_line,
                                bool colour) const {
  const auto styled = [colour](const char* style, const std::string& text) {
    return colour ? style + text + kReset : text;
  };
  std::string line;
  if (target_ > 0) {
    const std::string target_text = std::to_string(target_);
    std::string counter = std::to_string(current);
    const int width = digit_count(target_);
    if (static_cast<int>(counter.size()) < width) counter.insert(0, static_cast<size_t>(width) - counter.size(), ' ');
    line += styled(kBold, counter + "/" + target_text) + " ";

    const double progress = std::clamp(static_cast<double>(current) / static_cast<double>(target_), 0.0, 1.0);
    const int done = std::clamp(static_cast<int>(kBarWidth * progress), 0, kBarWidth);
    std::string done_bar, rest_bar;
    for (int i = 0; i < done; ++i) done_bar += kBarChar;
    for (int i = done; i < kBarWidth; ++i) rest_bar += kBarChar;
    if (done > 0) line += styled(kGreen, done_bar);
    if (done < kBarWidth) line += styled(kDim, rest_bar);
  } else {
    // Unknown target: Keras prints only the counter.
    line += styled(kBold, std::to_string(current) + "/Unknown");
  }

  const double seconds_per_step = current > 0 ? elapsed_seconds / static_cast<double>(current) : 0.0;
  // Appends rather than `" " + text`: g++ 12 at -O3 raises a false -Wrestrict on the latter (GCC PR 105651).
  line += ' ';
  if (target_ > 0 && !final_line) {
    line += styled(kBold, format_eta(seconds_per_step * static_cast<double>(target_ - current)));
  } else {
    line += printf_string("%.0fs", elapsed_seconds);
  }
  line += ' ';
  line += format_time_per_step(seconds_per_step);

  Values sorted = values;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [name, value] : sorted) {
    line += " - ";
    line += name;
    line += ": ";
    line += format_value(value);
  }
  return line;
}

void ProgressBar::update(int64_t current, const Values& values) {
  current_ = current;
  if (!interactive_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool first = last_draw_ == std::chrono::steady_clock::time_point{};
  const bool last = target_ > 0 && current >= target_;
  if (!first && !last && now - last_draw_ < kRedrawInterval) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  out_ << '\r' << render(current, elapsed, values, false, true) << kClearToEnd << std::flush;
}

void ProgressBar::finish(const Values& values, const std::string& extra) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string line = render(current_, elapsed, values, true, interactive_) + extra;
  if (interactive_) {
    out_ << '\r' << line << kClearToEnd << '\n' << std::flush;
  } else {
    out_ << line << '\n' << std::flush;
  }
}

bool ProgressBar::is_terminal(std::ostream& out) {
  if (&out == &std::cout) return isatty(STDOUT_FILENO) == 1;
  if (&out == &std::cerr || &out == &std::clog) return isatty(STDERR_FILENO) == 1;
  return false;
}

}  // namespace mirror
