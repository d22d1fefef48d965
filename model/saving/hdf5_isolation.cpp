// read_weights_h5: libhdf5 reads the file in a child process bounded in memory, CPU time and wall
// time, and sends back plain arrays through a memfd. libhdf5 1.10 crashes, loops and exhausts
// memory on some damaged files; in the child that costs the child, and here it is a DataError.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>

#include "mirror/engine/error.hpp"
#include "mirror/engine/signal_catcher.hpp"
#include "mirror/model/saving/keras_format.hpp"

// A sanitizer's death callback (libFuzzer sets one to save its input) belongs to the parent: run in
// the child, it would report the parent's input as a finding. Null outside sanitizer builds.
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace mirror::saving {
namespace {

constexpr uint64_t kMagic = 0x31'35'68'2d'72'72'69'6d;  // "mirr-h51", little-endian
enum class Record : uint8_t { Image = 1, Error = 2 };
constexpr int kMaxRank = 8;

IsolationLimits resolved(IsolationLimits l, size_t file_bytes) {
  // A sound file takes libhdf5 well under a second per 100 MiB; the fixed parts cover a loaded
  // machine. Memory: libhdf5's copy of the image, the floats (twice the bytes when stored as
  // float16) and its caches.
  const double mib = static_cast<double>(file_bytes) / (1 << 20);
  if (l.wall_seconds <= 0) l.wall_seconds = 30 + mib / 10;
  if (l.cpu_seconds <= 0) l.cpu_seconds = 10 + mib / 20;
  if (l.memory_bytes == 0) l.memory_bytes = (size_t{512} << 20) + 4 * file_bytes;
  return l;
}

// What a sound file's contents take as records: its floats are at most half its bytes (float16).
size_t result_limit(size_t file_bytes) { return 2 * file_bytes + (size_t{64} << 20); }

// ---- The child ----------------------------------------------------------------------------------

// Records to the memfd, buffered. A write past RLIMIT_FSIZE ends the child with SIGXFSZ.
class RecordWriter {
 public:
  explicit RecordWriter(int fd) : fd_(fd) { buffer_.reserve(kBufferBytes); }
  void bytes(const void* data, size_t count) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (count > 0) {
      const size_t n = std::min(count, kBufferBytes - buffer_.size());
      buffer_.insert(buffer_.end(), p, p + n);
      p += n;
      count -= n;
      if (buffer_.size() == kBufferBytes) flush();
    }
  }
  void u64(uint64_t v) { bytes(&v, sizeof v); }
  void text(const std::string& s) {
    u64(s.size());
    bytes(s.data(), s.size());
  }
  void flush() {
    for (size_t done = 0; done < buffer_.size();) {
      const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(3);
      done += static_cast<size_t>(n);
    }
    buffer_.clear();
  }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;
  int fd_;
  std::vector<uint8_t> buffer_;
};

// A sanitizer reserves terabytes of address space for its shadow memory and maps more as it goes,
// so an address-space limit would end the child in the sanitizer's own mmap; there the parent's
// watch of the child's resident memory (wait_for_child) bounds it alone.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kLimitAddressSpace = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
constexpr bool kLimitAddressSpace = false;
#else
constexpr bool kLimitAddressSpace = true;
#endif
#else
constexpr bool kLimitAddressSpace = true;
#endif

void set_limit(int resource, rlim_t soft, rlim_t hard) {
  const rlimit limit{soft, hard};
  setrlimit(resource, &limit);
}

struct ChildLimits {
  rlim_t address_space_bytes;
  rlim_t cpu_seconds;
  rlim_t result_bytes;
};

// Runs in the forked child (one thread: the one that forked). The parent held the HDF5 lock while
// forking, so libhdf5 is between calls here. Never returns.
[[noreturn]] void run_child(std::span<const uint8_t> bytes, const std::string& source, int out_fd, const ChildLimits& limits) {
  // A crash must end the child, not run the parent's handlers (a crash reporter, a sanitizer's,
  // the backup's SIGINT handler), which would report or resume as if they were in the parent.
  for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGXCPU, SIGXFSZ, SIGINT, SIGTERM}) signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
  set_limit(RLIMIT_CORE, 0, 0);
  set_limit(RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1);  // SIGXCPU, then SIGKILL
  if (kLimitAddressSpace) set_limit(RLIMIT_AS, limits.address_space_bytes, limits.address_space_bytes);
  set_limit(RLIMIT_FSIZE, limits.result_bytes, limits.result_bytes);
  try {
    RecordWriter out(out_fd);
    out.u64(kMagic);
    std::string error;
    try {
      const WeightsImage image = read_weights_h5_here(bytes, source);
      const Record record = Record::Image;
      out.bytes(&record, 1);
      out.u64(image.keys.size());
      for (const std::string& key : image.keys) {
        out.text(key);
        const std::vector<Array>& arrays = image.vars.at(key);
        out.u64(arrays.size());
        for (const Array& a : arrays) {
          out.u64(a.shape.size());
          out.bytes(a.shape.data(), a.shape.size() * sizeof(int64_t));
          out.u64(a.values.size());
          out.bytes(a.values.data(), a.values.size() * sizeof(float));
        }
      }
    } catch (const std::bad_alloc&) {
      error = str(source, ": libhdf5 needed more memory than the parent allows it to read it: the file is damaged");
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      const Record record = Record::Error;
      out.bytes(&record, 1);
      out.text(error);
    }
    out.flush();
  } catch (...) {
    _exit(3);
  }
  _exit(0);
}

// ---- The parent ---------------------------------------------------------------------------------

class Mapping {
 public:
  Mapping(int fd, size_t num_bytes) : num_bytes_(num_bytes) {
    void* p = ::mmap(nullptr, num_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<const uint8_t*>(p);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), num_bytes_);
  }
  std::span<const uint8_t> bytes() const { return {data_, data_ ? num_bytes_ : 0}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t num_bytes_;
};

// This process's (virtual, resident) size in bytes, from /proc: the child starts with the same.
struct Footprint {
  size_t virtual_bytes = 0;
  size_t resident_bytes = 0;
};

Footprint footprint_of(const char* statm_path) {
  Footprint f;
  if (FILE* file = std::fopen(statm_path, "r")) {
    unsigned long long pages_virtual = 0, pages_resident = 0;
    if (std::fscanf(file, "%llu %llu", &pages_virtual, &pages_resident) == 2) {
      const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      f.virtual_bytes = static_cast<size_t>(pages_virtual) * page;
      f.resident_bytes = static_cast<size_t>(pages_resident) * page;
    }
    std::fclose(file);
  }
  return f;
}

// How the child ended: its wait status, or why it was killed here.
struct Ending {
  enum class Cause { Exited, Deadline, Memory } cause = Cause::Exited;
  int status = 0;
};

// Waits for the child, killing it past the wall-clock deadline or when its resident memory grows
// past the budget (the address-space limit alone misses memory mapped over reservations, as a
// sanitizer's allocator does). Polls: a first check soon, then every 10 ms.
Ending wait_for(pid_t pid, const IsolationLimits& limits, size_t resident_at_fork) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration<double>(limits.wall_seconds);
  const std::string statm = str("/proc/", pid, "/statm");
  Ending ending;
  long sleep_us = 50;
  for (;;) {
    const pid_t r = ::waitpid(pid, &ending.status, WNOHANG);
    if (r == pid) return ending;
    if (r < 0 && errno != EINTR) throw DataError(str("waitpid on the process reading a weights file failed: ", std::strerror(errno)));
    if (Clock::now() > deadline) {
      ending.cause = Ending::Cause::Deadline;
    } else if (footprint_of(statm.c_str()).resident_bytes > resident_at_fork + limits.memory_bytes) {
      ending.cause = Ending::Cause::Memory;
    }
    if (ending.cause != Ending::Cause::Exited) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &ending.status, 0) < 0 && errno == EINTR) {
      }
      return ending;
    }
    ::usleep(static_cast<useconds_t>(sleep_us));
    sleep_us = std::min(sleep_us * 2, 10'000L);
  }
}

std::string mib(size_t num_bytes) { return str(num_bytes >> 20, " MiB"); }

// Why the child did not send back a result, if it did not.
void check_ending(const Ending& ending, const std::string& source, const IsolationLimits& limits, size_t file_bytes) {
  switch (ending.cause) {
    case Ending::Cause::Deadline:
      throw DataError(str(source, ": libhdf5 did not finish reading it within ", limits.wall_seconds,
                          " s: the file is damaged (or this machine is overloaded)"));
    case Ending::Cause::Memory:
      throw DataError(str(source, ": libhdf5 used more than ", mib(limits.memory_bytes), " of memory reading the ", file_bytes,
                          "-byte file: the file is damaged"));
    case Ending::Cause::Exited:
      break;
  }
  const int status = ending.status;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFEXITED(status))
    throw DataError(str(source, ": the process reading it with libhdf5 failed (exit status ", WEXITSTATUS(status), ")"));
  const int signal = WTERMSIG(status);
  switch (signal) {
    case SIGXCPU:
    case SIGKILL:  // the hard CPU limit, or the kernel out of memory
      throw DataError(str(source, ": libhdf5 was stopped by ", signal_name(signal), " after using more than ", limits.cpu_seconds,
                          " s of CPU time or the memory it may use reading it: the file is damaged"));
    case SIGXFSZ:
      throw DataError(str(source, ": what libhdf5 read from it exceeds ", mib(result_limit(file_bytes)),
                          ", more than a ", file_bytes, "-byte weights file can hold: the file is damaged"));
    case SIGINT:
    case SIGTERM:
      throw DataError(str(source, ": reading it was interrupted (", signal_name(signal), ")"));
    default:
      throw DataError(str(source, ": libhdf5 crashed (", signal_name(signal), ") reading it: the file is damaged"));
  }
}

// The child's records, checked as untrusted input: every size against what remains.
class RecordReader {
 public:
  RecordReader(std::span<const uint8_t> bytes, const std::string& source) : bytes_(bytes), source_(source) {}

  void take(void* out, size_t count) {
    need(count);
    std::memcpy(out, bytes_.data() + at_, count);
    at_ += count;
  }
  uint64_t u64() {
    uint64_t v;
    take(&v, sizeof v);
    return v;
  }
  uint8_t u8() {
    uint8_t v;
    take(&v, 1);
    return v;
  }
  std::string text() {
    const uint64_t n = u64();
    need(n);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + at_), n);
    at_ += n;
    return s;
  }
  Array array(size_t file_bytes) {
    Array a;
    const uint64_t rank = u64();
    check(rank <= kMaxRank, "an array of rank > 8");
    a.shape.resize(rank);
    take(a.shape.data(), rank * sizeof(int64_t));
    uint64_t count = 1;
    for (int64_t d : a.shape) {
      check(d >= 0 && static_cast<uint64_t>(d) <= file_bytes && (d == 0 || count <= file_bytes / static_cast<uint64_t>(d)),
            "a dimension the file cannot hold");
      count *= static_cast<uint64_t>(d);
    }
    check(u64() == count && count <= (bytes_.size() - at_) / sizeof(float), "a value count that does not match its shape");
    a.values.resize(count);
    take(a.values.data(), count * sizeof(float));
    return a;
  }
  bool done() const { return at_ == bytes_.size(); }
  void check(bool ok, const char* what) const {
    MIRROR_REQUIRE(ok, DataError, source_, ": the process reading it with libhdf5 sent back ", what);
  }

 private:
  void need(uint64_t count) const { check(count <= bytes_.size() - at_, "truncated records"); }

  std::span<const uint8_t> bytes_;
  const std::string& source_;
  size_t at_ = 0;
};

WeightsImage parse_records(std::span<const uint8_t> bytes, const std::string& source, size_t file_bytes) {
  RecordReader in(bytes, source);
  in.check(in.u64() == kMagic, "records of another format");
  const uint8_t record = in.u8();
  if (record == static_cast<uint8_t>(Record::Error)) {
    const std::string message = in.text();
    in.check(in.done(), "trailing bytes");
    throw DataError(message);
  }
  in.check(record == static_cast<uint8_t>(Record::Image), "an unknown record");
  WeightsImage image;
  const uint64_t keys = in.u64();
  for (uint64_t k = 0; k < keys; ++k) {
    std::string key = in.text();
    in.check(!image.vars.count(key), "a layer group twice");
    std::vector<Array>& arrays = image.vars[key];
    const uint64_t count = in.u64();
    for (uint64_t i = 0; i < count; ++i) arrays.push_back(in.array(file_bytes));
    image.keys.push_back(std::move(key));
  }
  in.check(in.done(), "trailing bytes");
  return image;
}

}  // namespace

WeightsImage read_weights_h5(std::span<const uint8_t> bytes, const std::string& source, const IsolationLimits& limits) {
  static constexpr uint8_t kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  MIRROR_REQUIRE(bytes.size() >= 8 && std::equal(kSignature, kSignature + 8, bytes.begin()), DataError, source,
                 " is not an HDF5 file (it does not start with HDF5's signature)");
  const IsolationLimits l = resolved(limits, bytes.size());
  const Fd out(::memfd_create("mirror-weights-h5", MFD_CLOEXEC));
  MIRROR_REQUIRE(out.get() >= 0, DataError, "cannot read ", source, ": memfd_create failed: ", std::strerror(errno));
  pid_t pid;
  size_t resident_at_fork;
  {
    const auto hdf5 = lock_hdf5();
    const Footprint before = footprint_of("/proc/self/statm");
    resident_at_fork = before.resident_bytes;
    const rlim_t address_space = before.virtual_bytes > 0 ? before.virtual_bytes + l.memory_bytes : RLIM_INFINITY;
    const ChildLimits child{address_space, static_cast<rlim_t>(l.cpu_seconds + 0.999),
                            result_limit(bytes.size())};
    pid = ::fork();
    if (pid == 0) run_child(bytes, source, out.get(), child);
  }
  MIRROR_REQUIRE(pid > 0, DataError, "cannot read ", source, ": fork failed: ", std::strerror(errno));
  check_ending(wait_for(pid, l, resident_at_fork), source, l, bytes.size());
  struct stat st {};
  MIRROR_REQUIRE(::fstat(out.get(), &st) == 0 && st.st_size > 0, DataError, source,
                 ": the process reading it with libhdf5 sent back nothing");
  const auto num_bytes = static_cast<size_t>(st.st_size);
  MIRROR_REQUIRE(num_bytes <= result_limit(bytes.size()), DataError, source, ": the process reading it with libhdf5 sent back ",
                 num_bytes, " bytes, more than the file can hold");
  const Mapping records(out.get(), num_bytes);
  MIRROR_REQUIRE(!records.bytes().empty(), DataError, "cannot read ", source, ": mmap failed: ", std::strerror(errno));
  return parse_records(records.bytes(), source, bytes.size());
}

}  // namespace mirror::saving
