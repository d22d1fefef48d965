// FitOptions::trace: a fit of two host replicas writes a Chrome trace-event file whose lanes,
// nesting and span counts are those of the steps it ran; a path that cannot be written is refused
// before the first step; a lane with a device clock (a GPU's stream) takes the clock's times and
// brackets each span in a named range.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mirror/mirror.hpp"

namespace mirror {
namespace {

using nlohmann::json;

struct Span {
  std::string name, category;
  double begin_us = 0, end_us = 0;
  int64_t step = 0;
};

// ts and dur are printed to the nanosecond each, so an end may be off by a rounding.
constexpr double kRoundingUs = 0.002;

bool contains(const Span& outer, const Span& inner) {
  return inner.begin_us >= outer.begin_us - kRoundingUs && inner.end_us <= outer.end_us + kRoundingUs;
}

// Every two spans of a lane are disjoint or one holds the other.
::testing::AssertionResult well_nested(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin_us != b.begin_us ? a.begin_us < b.begin_us : a.end_us > b.end_us;
  });
  std::vector<const Span*> open;
  for (const Span& s : spans) {
    while (!open.empty() && s.begin_us >= open.back()->end_us - kRoundingUs) open.pop_back();
    if (!open.empty() && !contains(*open.back(), s))
      return ::testing::AssertionFailure() << "'" << s.name << "' [" << s.begin_us << ", " << s.end_us << "] overlaps '"
                                           << open.back()->name << "' [" << open.back()->begin_us << ", "
                                           << open.back()->end_us << "] without being inside it";
    open.push_back(&s);
  }
  return ::testing::AssertionSuccess();
}

int64_t count(const std::vector<Span>& spans, const std::string& category) {
  return std::count_if(spans.begin(), spans.end(), [&](const Span& s) { return s.category == category; });
}

TEST(Trace, TwoReplicasWriteNestedSpansForEveryStep) {
  constexpr int64_t kSteps = 12, kBatch = 32;
  const ImageSet data = data::synthetic_images(kSteps * kBatch);
  HostStrategy strategy(2);
  Sequential model({layers::Conv2D(32, {3, 3}, Activation::ReLU, data.sample_shape()), layers::MaxPooling2D({2, 2}),
                    layers::Flatten(), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 42);
  const std::string path = ::testing::TempDir() + "mirror_trace_test.json";
  const size_t bucket_bytes = 64 << 10;
  model.fit(data, {.batch_size = kBatch, .verbose = 0, .gradient_bucket_bytes = bucket_bytes, .trace = path});

  std::ifstream file(path);
  ASSERT_TRUE(file.is_open()) << path;
  const json trace = json::parse(file);
  std::remove(path.c_str());
  ASSERT_TRUE(trace.contains("traceEvents"));
  EXPECT_EQ(trace["otherData"]["dropped_spans"], 0);

  // Lanes by (pid, tid), named by the metadata events.
  std::map<std::pair<int, int>, std::string> lane_names;
  std::map<int, std::string> process_names;
  std::map<std::pair<int, int>, std::vector<Span>> lanes;
  for (const json& e : trace["traceEvents"]) {
    const std::pair<int, int> lane{e["pid"].get<int>(), e["tid"].get<int>()};
    if (e["ph"] == "M" && e["name"] == "thread_name") lane_names[lane] = e["args"]["name"];
    if (e["ph"] == "M" && e["name"] == "process_name") process_names[lane.first] = e["args"]["name"];
    if (e["ph"] != "X") continue;
    const double ts = e["ts"], dur = e["dur"];
    ASSERT_GE(dur, 0.0);
    lanes[lane].push_back({e["name"], e["cat"], ts, ts + dur, e["args"]["step"].get<int64_t>()});
  }
  ASSERT_EQ(process_names.size(), 2u);
  EXPECT_NE(process_names[0].find("replica 0"), std::string::npos) << process_names[0];
  EXPECT_NE(process_names[1].find("replica 1"), std::string::npos) << process_names[1];
  ASSERT_EQ(lane_names.size(), 4u);

  const int64_t params = 3 * 3 * 32 + 32 + 13 * 13 * 32 * 10 + 10;
  const int64_t buckets = (params * 4 + static_cast<int64_t>(bucket_bytes) - 1) / static_cast<int64_t>(bucket_bytes);
  for (int r = 0; r < 2; ++r) {
    const std::pair<int, int> compute{r, Strategy::compute_lane(r)}, comm{r, Strategy::communication_lane(r)};
    ASSERT_EQ(lane_names[compute], "compute");
    ASSERT_EQ(lane_names[comm], "all-reduce");
    const std::vector<Span>& spans = lanes[compute];
    EXPECT_TRUE(well_nested(spans)) << "replica " << r;
    EXPECT_TRUE(well_nested(lanes[comm])) << "replica " << r;
    // Conv2D (running the MaxPooling2D after it: the host fuses the two) and Dense run ops;
    // Flatten is a view.
    EXPECT_EQ(count(spans, "step"), kSteps);
    EXPECT_EQ(count(spans, "gather"), kSteps);
    EXPECT_EQ(count(spans, "forward"), kSteps * 2);
    EXPECT_EQ(count(spans, "backward"), kSteps * 2);
    EXPECT_EQ(std::count_if(spans.begin(), spans.end(),
                            [](const Span& s) { return s.name.find(" + max_pooling2d") != std::string::npos; }),
              kSteps * 2)
        << "the convolution's spans name the pooling they run";
    EXPECT_EQ(count(spans, "optimizer"), kSteps);
    EXPECT_EQ(count(lanes[comm], "all_reduce"), kSteps * (buckets + 1));  // the buckets and the statistics
    if (r == 0) {
      EXPECT_GE(count(spans, "read_totals"), 1);
    }

    std::map<int64_t, Span> steps;
    for (const Span& s : spans)
      if (s.category == "step") steps[s.step] = s;
    ASSERT_EQ(steps.size(), static_cast<size_t>(kSteps));
    for (const Span& s : spans)
      EXPECT_TRUE(contains(steps[s.step], s)) << "'" << s.name << "' of step " << s.step << " outside it";
    for (const Span& s : lanes[comm])
      EXPECT_TRUE(contains(steps[s.step], s)) << "'" << s.name << "' of step " << s.step << " outside it";
  }
}

// A fit that an exception ends still writes the steps it ran.
TEST(Trace, FitEndedByAnExceptionWritesItsSteps) {
  const ImageSet data = data::synthetic_images(20 * 32);
  HostStrategy strategy(2);
  Sequential model({layers::Flatten(data.sample_shape()), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {}, 42);
  struct StopAfterFiveSteps final : Callback {
    void on_train_batch_end(int64_t batch, const MetricValues* /*logs*/) override {
      if (batch == 4) throw std::runtime_error("stopped by the test");
    }
  };
  const std::string path = ::testing::TempDir() + "mirror_trace_interrupted.json";
  EXPECT_THROW(model.fit(data, {.verbose = 0, .callbacks = {std::make_shared<StopAfterFiveSteps>()}, .trace = path}),
               std::runtime_error);
  std::ifstream file(path);
  ASSERT_TRUE(file.is_open()) << path;
  const json trace = json::parse(file);
  std::remove(path.c_str());
  std::map<int, int64_t> steps;  // per pid (replica)
  for (const json& e : trace["traceEvents"])
    if (e["ph"] == "X" && e["cat"] == "step") ++steps[e["pid"].get<int>()];
  EXPECT_EQ(steps[0], 5);
  EXPECT_EQ(steps[1], 5);
}

// Marks 1 µs apart from `base`, as a GPU's events would be once resolved; counts the ranges.
class FakeDeviceClock final : public DeviceClock {
 public:
  explicit FakeDeviceClock(int64_t base_ns) : base_ns_(base_ns) {}
  void reset(size_t marks) override {
    room_ = marks;
    made_ = 0;
  }
  int64_t mark() noexcept override { return made_ < room_ ? static_cast<int64_t>(made_++) : -1; }
  int64_t time_ns(int64_t ticket) override {
    if (ticket < 0 || static_cast<size_t>(ticket) >= made_) throw std::out_of_range("no such mark");
    return base_ns_ + ticket * 1000;
  }
  void range_push(const char* name) noexcept override {
    ranges.emplace_back(name);
    ++depth;
  }
  void range_pop() noexcept override { --depth; }

  std::vector<std::string> ranges;
  int depth = 0;

 private:
  int64_t base_ns_;
  size_t room_ = 0, made_ = 0;
};

TEST(Trace, ALaneWithADeviceClockTakesTheClocksTimes) {
  Tracer tracer;
  tracer.start({{"replica 0 (GPU 0)", "compute"}, {"replica 0 (GPU 0)", "all-reduce"}}, 8);
  FakeDeviceClock clock(Tracer::now_ns() + 5'000'000);  // the device's work ran 5 ms after start()
  clock.reset(6);
  tracer.set_clock(0, &clock);
  const int step = tracer.name_id("train step", "step"), forward = tracer.name_id("forward conv2d", "forward");
  {
    const TraceScope outer(tracer, 0, step, 7);  // marks 0 and 3
    const TraceScope inner(tracer, 0, forward, 7);  // marks 1 and 2
  }
  { const TraceScope host(tracer, 1, forward, 7); }  // the collectives' lane keeps the host's clock
  { const TraceScope late(tracer, 0, step, 8); }  // marks 4 and 5: the clock's last room
  { const TraceScope dropped(tracer, 0, step, 9); }  // no room: dropped, not written with a bad time
  EXPECT_EQ(clock.depth, 0);
  EXPECT_EQ(clock.ranges, (std::vector<std::string>{"train step", "forward conv2d", "train step", "train step"}));
  EXPECT_EQ(tracer.recorded(), 4u);
  EXPECT_EQ(tracer.dropped(), 1u);

  const std::string path = ::testing::TempDir() + "mirror_trace_device_clock.json";
  tracer.write_chrome_trace(path);
  std::ifstream file(path);
  ASSERT_TRUE(file.is_open()) << path;
  const json trace = json::parse(file);
  std::remove(path.c_str());
  std::map<std::pair<int, int64_t>, std::pair<double, double>> spans;  // (tid, step) of the device lane's steps
  double forward_ts = -1, forward_dur = -1, host_ts = -1;
  for (const json& e : trace["traceEvents"]) {
    if (e["ph"] != "X") continue;
    const double ts = e["ts"], dur = e["dur"];
    if (e["tid"] == 1) host_ts = ts;
    else if (e["cat"] == "forward") forward_ts = ts, forward_dur = dur;
    else spans[{e["tid"].get<int>(), e["args"]["step"].get<int64_t>()}] = {ts, dur};
  }
  ASSERT_EQ(spans.size(), 2u);
  const auto [step_ts, step_dur] = spans[{0, 7}];
  EXPECT_GE(step_ts, 5000.0);  // µs from start(): the device's times, not the host's
  EXPECT_NEAR(step_dur, 3.0, 1e-9);
  EXPECT_NEAR(forward_ts - step_ts, 1.0, 1e-9);
  EXPECT_NEAR(forward_dur, 1.0, 1e-9);
  const double late_ts = spans[{0, 8}].first;
  EXPECT_NEAR(late_ts - step_ts, 4.0, 1e-9);
  EXPECT_GE(host_ts, 0.0);
  EXPECT_LT(host_ts, 5000.0);
}

TEST(Trace, UnwritablePathIsRefusedBeforeTraining) {
  const ImageSet data = data::synthetic_images(64);
  HostStrategy strategy(1);
  Sequential model({layers::Flatten(data.sample_shape()), layers::Dense(10, Activation::Softmax)});
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {}, 42);
  try {
    model.fit(data, {.verbose = 0, .trace = "/nonexistent-directory/trace.json"});
    FAIL() << "fit accepted a trace path it cannot write";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-directory/trace.json"), std::string::npos) << e.what();
  }
  EXPECT_EQ(model.iterations(), 0) << "fit trained before refusing the trace path";
}

}  // namespace
}  // namespace mirror
