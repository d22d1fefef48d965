// The replica machinery shared by every strategy (see strategy.hpp).
#include "mirror/strategy/strategy.hpp"

#include <algorithm>

#include "mirror/engine/error.hpp"

namespace mirror {

Strategy::Strategy(std::string name, std::vector<std::unique_ptr<Backend>> backends)
    : name_(std::move(name)), backends_(std::move(backends)) {
  MIRROR_REQUIRE(!backends_.empty(), InvalidArgument, "a strategy needs at least one replica");
}

Strategy::~Strategy() {
  // Before the members (backends, workers) go: what owners hold of the replicas is freed by them.
  for (auto& [owner, release] : std::exchange(releases_, {})) release();
}

void Strategy::on_destroy(const void* owner, std::function<void()> release) {
  forget(owner);
  releases_.emplace_back(owner, std::move(release));
}

void Strategy::forget(const void* owner) {
  std::erase_if(releases_, [owner](const auto& entry) { return entry.first == owner; });
}

void Strategy::start() {
  communicator_ = make_communicator();
  workers_ = std::make_unique<ReplicaWorkers>(
      num_replicas(), [this](int r) { backends_[static_cast<size_t>(r)]->bind_current_thread(); },
      [this] { communicator_->abort("a collective was aborted because another replica failed"); });
}

std::vector<Device> Strategy::devices() const {
  std::vector<Device> result;
  for (const auto& b : backends_) result.push_back(b->device());
  return result;
}

void Strategy::run(FunctionRef<void(int)> fn) {
  try {
    workers_->run(fn);
  } catch (...) {
    // The old communicator may be aborted or mid-collective; every worker has returned, so it
    // is safe to replace.
    communicator_ = make_communicator();
    throw;
  }
}

Strategy::Use Strategy::use(const char* what) {
  const std::lock_guard lock(use_mutex_);
  const std::thread::id self = std::this_thread::get_id();
  if (user_ == self) return Use(nullptr);
  MIRROR_REQUIRE(user_ == std::thread::id{}, InvalidArgument, "cannot ", what, "() on the ", name_,
                 " strategy: another thread's ", user_what_, "() is running on it. A strategy runs one model's fit, "
                 "evaluate or predict at a time: give each thread its own strategy, or wait for the other call");
  user_ = self;
  user_what_ = what;
  return Use(this);
}

Strategy::Use::~Use() {
  if (!strategy_) return;
  const std::lock_guard lock(strategy_->use_mutex_);
  strategy_->user_ = {};
  strategy_->user_what_ = nullptr;
}

namespace {

// Share `r` of `rows` split into `n` contiguous shares (the first rows % n get the extra row).
BatchShare share_of(int64_t rows, int64_t n, int64_t r) {
  MIRROR_REQUIRE(rows >= 0, InvalidArgument, "cannot split a batch of ", rows, " rows");
  const int64_t base = rows / n, extra = rows % n;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

}  // namespace

BatchShare Strategy::batch_share(int64_t rows, int replica) const {
  return share_of(rows, world_replicas(), first_global_replica() + replica);
}

BatchShare Strategy::batch_share_in_process(int64_t rows, int replica) const {
  return share_of(rows, num_replicas(), replica);
}

std::vector<BatchShare> Strategy::split_batch(int64_t rows) const {
  std::vector<BatchShare> shares;
  for (int r = 0; r < num_replicas(); ++r) shares.push_back(batch_share(rows, r));
  return shares;
}

std::vector<BatchShare> Strategy::split_batch_in_process(int64_t rows) const {
  std::vector<BatchShare> shares;
  for (int r = 0; r < num_replicas(); ++r) shares.push_back(batch_share_in_process(rows, r));
  return shares;
}

void Strategy::start_tracing(size_t spans_per_lane) {
  std::vector<Tracer::Lane> lanes;
  for (int r = 0; r < num_replicas(); ++r) {
    const std::string process = str("replica ", first_global_replica() + r, " (", device(r).name(), ")");
    lanes.push_back({process, "compute"});
    lanes.push_back({process, "all-reduce"});
  }
  tracer_.start(std::move(lanes), spans_per_lane);
  // A GPU replica's compute lane is timed on its stream: two marks per span.
  device_clocks_.clear();
  for (int r = 0; r < num_replicas(); ++r) {
    std::unique_ptr<DeviceClock> clock = backend(r).make_device_clock();
    if (!clock) continue;
    clock->reset(2 * spans_per_lane);
    tracer_.set_clock(compute_lane(r), clock.get());
    device_clocks_.push_back(std::move(clock));
  }
}

std::string Strategy::describe() const {
  std::string s = str(name_, " strategy with ", num_replicas(), num_replicas() == 1 ? " replica" : " replicas", " on ");
  if (world_replicas() != num_replicas()) {
    const int workers = world_replicas() / num_replicas();
    s = str(name_, " strategy with ", workers, " workers x ", num_replicas(), num_replicas() == 1 ? " replica" : " replicas",
            " per worker (", world_replicas(), " in all); this worker (", first_global_replica() / num_replicas(),
            ") on ");
  }
  const auto devs = devices();
  for (size_t i = 0; i < devs.size(); ++i) {
    if (i > 0 && devs[i] == devs[i - 1]) continue;
    s += (i ? ", " : "") + devs[i].name();
  }
  return s;
}

}  // namespace mirror
