// SIGINT and SIGTERM turned into a value a program reads at its next safe point (after a training
// step, after a batch of an evaluation, between two files), so that a run ends with a message
// saying what it was doing and what it saved instead of dying in the middle.
#pragma once

#include <string>

namespace mirror {

// While alive (and `active`), SIGINT and SIGTERM are recorded instead of ending the process, once:
// the handler is reset after the first, so a second signal acts as it did before. Catchers nest
// (construct and destroy them on one thread): an inner one sees a signal that arrived while an
// outer one was alive, and only the outermost installs the handlers and gives the previous ones
// back when it dies.
class SignalCatcher {
 public:
  explicit SignalCatcher(bool active = true);
  ~SignalCatcher();
  SignalCatcher(const SignalCatcher&) = delete;
  SignalCatcher& operator=(const SignalCatcher&) = delete;
  // 0, or the signal that arrived.
  int caught() const;

 private:
  bool active_;
};

// The signal's name ("SIGINT", "SIGSEGV", ...), or "signal N" for a number with none.
std::string signal_name(int signal);

}  // namespace mirror
