// SignalCatcher (signal_catcher.hpp): one process-wide record of the first SIGINT or SIGTERM.
#include "mirror/engine/signal_catcher.hpp"

#include <atomic>
#include <csignal>
#include <cstring>
#include <utility>

#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

std::atomic<int> g_caught{0};
int g_depth = 0;  // catchers alive; only ever changed on the thread that makes them
struct sigaction g_previous_int, g_previous_term;

extern "C" void record_signal(int signal) { g_caught.store(signal); }

}  // namespace

SignalCatcher::SignalCatcher(bool active) : active_(active) {
  if (!active_ || g_depth++ > 0) return;
  g_caught.store(0);
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;  // a second signal acts as it would without a catcher
  // A signal the process ignores (nohup, a shell's background job) stays ignored.
  for (auto [signal, previous] : {std::pair{SIGINT, &g_previous_int}, std::pair{SIGTERM, &g_previous_term}}) {
    ::sigaction(signal, nullptr, previous);
    if (previous->sa_handler != SIG_IGN) ::sigaction(signal, &action, nullptr);
  }
}

SignalCatcher::~SignalCatcher() {
  if (!active_ || --g_depth > 0) return;
  ::sigaction(SIGINT, &g_previous_int, nullptr);
  ::sigaction(SIGTERM, &g_previous_term, nullptr);
}

int SignalCatcher::caught() const { return active_ ? g_caught.load() : 0; }

std::string signal_name(int signal) {
  if (const char* abbreviation = ::sigabbrev_np(signal)) return str("SIG", abbreviation);
  return str("signal ", signal);
}

}  // namespace mirror
