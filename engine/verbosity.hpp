// The log level of the engine's diagnostics, one for the process. At 2 and above the backends
// report their one-time choices on stderr, such as the convolution algorithms cuDNN picked for each
// shape; below 2 they say nothing (make_strategy's announcement and fit's progress bar have their
// own switches). MIRROR_VERBOSE sets the level when the process starts (default 1); set_verbosity()
// overrides it (train_cnn passes its --verbose).
#pragma once

#include <string_view>

namespace mirror {

int verbosity();
void set_verbosity(int level);

// Writes `line` and a newline to stderr in one piece (replica threads may log at once) when
// verbosity() >= level.
void verbose_log(int level, std::string_view line);

}  // namespace mirror
