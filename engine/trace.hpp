// Tracer: timed spans of a training run on lanes (one per replica's compute stream, one per
// communication stream), written as a Chrome trace-event file that Perfetto and chrome://tracing
// open. Spans are named once, before the run (name ids), and recorded into per-lane buffers
// sized when tracing starts, so recording allocates nothing. Off (the default), a span costs one
// predictable branch.
//
// Threads: a lane is written by one thread at a time (a replica's worker records on its own lanes);
// start(), names and write_chrome_trace() are for the thread driving the run, while no lane is
// being written. Times are the host's steady clock: on a GPU, when work was queued, not when it ran.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace mirror {

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

  // The id of the span name `name` in category `category` ("forward", "all_reduce", ...), the same
  // id for the same pair. Not during a run's steps: it may allocate.
  int name_id(const std::string& name, const std::string& category);

  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // Records a span [begin_ns, end_ns) of name `name` during step `step` on lane `lane`.
  void record(int lane, int name, int64_t step, int64_t begin_ns, int64_t end_ns) noexcept {
    LaneSpans& l = lanes_[static_cast<size_t>(lane)];
    if (l.count == l.spans.size()) {
      ++l.dropped;
      return;
    }
    l.spans[l.count++] = {name, step, begin_ns, end_ns};
  }

  // Spans recorded and dropped, over every lane.
  size_t recorded() const;
  size_t dropped() const;

  // Writes the recorded spans as Chrome trace events ("X" events, one pid per lane's process and
  // one tid per lane, microseconds from start()) to `path`. Throws Error naming the path when it
  // cannot be written.
  void write_chrome_trace(const std::string& path) const;

 private:
  struct Span {
    int name;
    int64_t step;
    int64_t begin_ns, end_ns;
  };
  struct LaneSpans {
    Lane lane;
    std::vector<Span> spans;  // sized by start()
    size_t count = 0;
    size_t dropped = 0;
  };
  struct Name {
    std::string name, category;
  };

  bool enabled_ = false;
  int64_t origin_ns_ = 0;
  std::vector<LaneSpans> lanes_;
  std::vector<Name> names_;
};

// Times the scope as one span when the tracer is on: a single branch when it is off.
class TraceScope {
 public:
  TraceScope(Tracer& tracer, int lane, int name, int64_t step) noexcept : TraceScope(&tracer, lane, name, step) {}
  // No span when `tracer` is null.
  TraceScope(Tracer* tracer, int lane, int name, int64_t step) noexcept
      : tracer_(tracer && tracer->enabled() ? tracer : nullptr), lane_(lane), name_(name), step_(step),
        begin_ns_(tracer_ ? Tracer::now_ns() : 0) {}
  ~TraceScope() {
    if (tracer_) tracer_->record(lane_, name_, step_, begin_ns_, Tracer::now_ns());
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  Tracer* tracer_;
  int lane_;
  int name_;
  int64_t step_;
  int64_t begin_ns_;
};

}  // namespace mirror
