// Tracer: timed spans of a training run on lanes (one per replica's compute stream, one per
// communication stream), written as a Chrome trace-event file that Perfetto and chrome://tracing
// open. Spans are named once, before the run (name ids), and recorded into per-lane buffers
// sized when tracing starts, so recording allocates nothing. Off (the default), a span costs one
// predictable branch.
//
// Threads: a lane is written by one thread at a time (a replica's worker records on its own lanes);
// start(), names and write_chrome_trace() are for the thread driving the run, while no lane is
// being written. Times are the host's steady clock; a lane given a DeviceClock (a GPU's compute
// stream) records device times instead: when the work ran, not when it was queued.
//
// DeviceClock: a clock on a device's queue. mark() queues a timestamp behind the work queued so
// far and returns its ticket; time_ns() (once the device got there) gives that time on the host's
// steady clock. The clock also opens and closes a named range around each span (NVTX on CUDA, for
// Nsight Systems).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace mirror {

class DeviceClock {
 public:
  virtual ~DeviceClock() = default;
  // Before a run: room for `marks` marks, all allocated now (none during the run); forgets
  // earlier marks and takes the device's time origin.
  virtual void reset(size_t marks) = 0;
  // Queues a mark on the device's queue; its ticket, or -1 when there is no room left.
  virtual int64_t mark() noexcept = 0;
  // The host steady-clock time, in ns, when the device reached mark `ticket`; waits for it.
  virtual int64_t time_ns(int64_t ticket) = 0;
  virtual void range_push(const char* name) noexcept = 0;
  virtual void range_pop() noexcept = 0;
};

class Tracer {
 public:
  // A lane of the trace: `process` groups lanes (a replica and its device), `thread` is the
  // lane's own name within it ("compute", "all-reduce").
  struct Lane {
    std::string process;
    std::string thread;
  };

  bool enabled() const { return enabled_; }

  // Starts recording on `lanes`, with room for `spans_per_lane` spans on each (later spans are
  // dropped and counted). Forgets earlier spans; keeps the names.
  void start(std::vector<Lane> lanes, size_t spans_per_lane);
  // Stops recording; the spans stay until the next start().
  void stop() { enabled_ = false; }
  // Times lane `lane`'s spans with `clock` (not owned; it must outlive the writing of the trace),
  // or with the host's clock when null. After start(), before the run's first span.
  void set_clock(int lane, DeviceClock* clock) { lanes_.at(static_cast<size_t>(lane)).clock = clock; }
  DeviceClock* clock(int lane) const { return lanes_[static_cast<size_t>(lane)].clock; }
  const char* name_text(int name) const { return names_[static_cast<size_t>(name)].name.c_str(); }

  // The id of the span name `name` in category `category` ("forward", "all_reduce", ...), the same
  // id for the same pair. Not during a run's steps: it may allocate.
  int name_id(const std::string& name, const std::string& category);

  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // Records a span [begin, end) of name `name` during step `step` on lane `lane`: host ns, or on
  // a lane with a clock the clock's tickets.
  void record(int lane, int name, int64_t step, int64_t begin, int64_t end) noexcept {
    LaneSpans& l = lanes_[static_cast<size_t>(lane)];
    if (l.count == l.spans.size() || begin < 0 || end < 0) {
      ++l.dropped;
      return;
    }
    l.spans[l.count++] = {name, step, begin, end};
  }

  // Spans recorded and dropped, over every lane.
  size_t recorded() const;
  size_t dropped() const;

  // Writes the recorded spans as Chrome trace events ("X" events, one pid per lane's process and
  // one tid per lane, microseconds from start()) to `path`; a lane with a clock has its tickets
  // turned into times first (which waits for its device). Throws Error naming the path when it
  // cannot be written.
  void write_chrome_trace(const std::string& path) const;

 private:
  struct Span {
    int name;
    int64_t step;
    int64_t begin, end;  // host ns, or the lane's clock's tickets
  };
  struct LaneSpans {
    Lane lane;
    std::vector<Span> spans;  // sized by start()
    size_t count = 0;
    size_t dropped = 0;
    DeviceClock* clock = nullptr;
  };
  struct Name {
    std::string name, category;
  };

  bool enabled_ = false;
  int64_t origin_ns_ = 0;
  std::vector<LaneSpans> lanes_;
  std::vector<Name> names_;
  std::unordered_map<std::string, int> name_ids_;  // category + '\0' + name -> index in names_
};

// Times the scope as one span when the tracer is on: a single branch when it is off. On a lane
// with a device clock the span is a range and two marks on the device's queue.
class TraceScope {
 public:
  TraceScope(Tracer& tracer, int lane, int name, int64_t step) noexcept : TraceScope(&tracer, lane, name, step) {}
  // No span when `tracer` is null.
  TraceScope(Tracer* tracer, int lane, int name, int64_t step) noexcept
      : tracer_(tracer && tracer->enabled() ? tracer : nullptr), lane_(lane), name_(name), step_(step) {
    if (!tracer_) return;
    clock_ = tracer_->clock(lane_);
    if (clock_) {
      clock_->range_push(tracer_->name_text(name_));
      begin_ = clock_->mark();
    } else {
      begin_ = Tracer::now_ns();
    }
  }
  ~TraceScope() {
    if (!tracer_) return;
    if (clock_) {
      tracer_->record(lane_, name_, step_, begin_, clock_->mark());
      clock_->range_pop();
    } else {
      tracer_->record(lane_, name_, step_, begin_, Tracer::now_ns());
    }
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  Tracer* tracer_;
  DeviceClock* clock_ = nullptr;
  int lane_;
  int name_;
  int64_t step_;
  int64_t begin_ = 0;  // host ns, or the clock's ticket
};

}  // namespace mirror
