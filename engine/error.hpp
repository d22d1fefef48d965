// Errors: typed exceptions whose messages say what went wrong and what to do about it.
// Only `main` turns them into exit codes; library code throws, never exits.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mirror {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller's mistake: a bad shape, batch size, option or flag.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// Input data that cannot be used: a missing or corrupt file, a label out of range.
class DataError : public Error {
 public:
  using Error::Error;
};

// A device that is absent, incompatible or failing (CUDA, cuDNN, cuBLAS, NCCL, oneDNN status).
class DeviceError : public Error {
 public:
  using Error::Error;
};

// Training diverged: a NaN or infinite loss.
class NumericalError : public Error {
 public:
  using Error::Error;
};

// A collective that was aborted or did not finish in time.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

// fit stopped by a signal (SIGINT, SIGTERM) after finishing a step; signal() says which, so a
// program can exit with 128 + signal as a shell expects.
class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& what) : Error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Concatenates its arguments with operator<< (g++ 12 has no <format>).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace mirror

// Throws `Type` with a message built from the remaining arguments when `cond` is false.
#define MIRROR_REQUIRE(cond, Type, ...)                \
  do {                                                 \
    if (!(cond)) throw Type(::mirror::str(__VA_ARGS__)); \
  } while (0)
