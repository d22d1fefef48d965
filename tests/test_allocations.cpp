// "No allocation in the steady state", proven: this program replaces the global operator new and
// delete (every variant) with counting ones, and a callback counts them, and the backends' buffer
// allocations, over 100 steps of fit once it is past its first steps. With one and with two host
// replicas Mirror's count must be zero. The first allocations found are printed with their stacks.
//
// oneDNN 2.x allocates inside every dnnl_primitive_execute (a std::unordered_map of the arguments,
// scratchpad views, std::function bodies for its parallel loops); no API avoids that, so those are
// told apart (a frame of the stack lies in libdnnl) and reported, not counted against Mirror.
#include <execinfo.h>
#include <gtest/gtest.h>
#include <link.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <cstdlib>
#include <cstring>
#include <new>

#include "mirror/mirror.hpp"

namespace {

std::atomic<bool> counting{false};
std::atomic<int64_t> allocations{0};       // outside oneDNN
std::atomic<int64_t> dnnl_allocations{0};  // with a frame in libdnnl

// The executable segments of libdnnl, found before counting starts.
constexpr int kMaxSegments = 8;
uintptr_t dnnl_begin[kMaxSegments], dnnl_end[kMaxSegments];
int dnnl_segments = 0;

int find_dnnl(dl_phdr_info* info, size_t /*size*/, void* /*data*/) {
  if (!info->dlpi_name || !std::strstr(info->dlpi_name, "libdnnl")) return 0;
  for (int i = 0; i < info->dlpi_phnum && dnnl_segments < kMaxSegments; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    dnnl_begin[dnnl_segments] = info->dlpi_addr + ph.p_vaddr;
    dnnl_end[dnnl_segments++] = info->dlpi_addr + ph.p_vaddr + ph.p_memsz;
  }
  return 0;
}

bool in_dnnl(void* const* frames, int depth) {
  for (int f = 0; f < depth; ++f)
    for (int s = 0; s < dnnl_segments; ++s) {
      const auto pc = reinterpret_cast<uintptr_t>(frames[f]);
      if (pc >= dnnl_begin[s] && pc < dnnl_end[s]) return true;
    }
  return false;
}

// The call stacks of the first allocations counted, for the failure message.
constexpr int kStacks = 4, kFrames = 32;
void* stacks[kStacks][kFrames];
int depths[kStacks];

void count_allocation() {
  void* frames[kFrames];
  const int depth = backtrace(frames, kFrames);
  if (in_dnnl(frames, depth)) {
    dnnl_allocations.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const int64_t n = allocations.fetch_add(1, std::memory_order_relaxed);
  if (n >= kStacks) return;
  std::memcpy(stacks[n], frames, sizeof frames);
  depths[n] = depth;
}

void* allocate(size_t num_bytes, size_t alignment) {
  if (counting.load(std::memory_order_relaxed)) count_allocation();
  if (num_bytes == 0) num_bytes = 1;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(num_bytes);
  return std::aligned_alloc(alignment, (num_bytes + alignment - 1) / alignment * alignment);
}

void* allocate_or_throw(size_t num_bytes, size_t alignment) {
  void* p = allocate(num_bytes, alignment);
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(size_t n) { return allocate_or_throw(n, 0); }
void* operator new[](size_t n) { return allocate_or_throw(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return allocate_or_throw(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a) { return allocate_or_throw(n, static_cast<size_t>(a)); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return allocate(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept { return allocate(n, static_cast<size_t>(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace mirror {
namespace {

constexpr int64_t kWarmupSteps = 20, kCountedSteps = 100;

// Counts host and device allocations from the start of batch `first` to the end of batch
// `first + kCountedSteps - 1` of the first epoch. Allocates nothing itself while counting.
class AllocationCounter final : public Callback {
 public:
  explicit AllocationCounter(Strategy& strategy) : strategy_(strategy) {}

  void on_train_batch_begin(int64_t batch) override {
    if (batch != kWarmupSteps || counted_) return;
    device_before_ = device_allocations();
    allocations.store(0);
    dnnl_allocations.store(0);
    counting.store(true);
  }
  void on_train_batch_end(int64_t batch, const MetricValues* /*logs*/) override {
    if (batch != kWarmupSteps + kCountedSteps - 1 || counted_) return;
    counting.store(false);
    host_ = allocations.load();
    dnnl_ = dnnl_allocations.load();
    device_ = device_allocations() - device_before_;
    counted_ = true;
  }

  bool counted() const { return counted_; }
  int64_t host() const { return host_; }
  int64_t device() const { return device_; }
  int64_t dnnl() const { return dnnl_; }

 private:
  int64_t device_allocations() const {
    int64_t n = 0;
    for (int r = 0; r < strategy_.num_replicas(); ++r) n += strategy_.backend(r).allocations();
    return n;
  }

  Strategy& strategy_;
  bool counted_ = false;
  int64_t device_before_ = 0, host_ = 0, device_ = 0, dnnl_ = 0;
};

void print_stacks(int64_t count) {
  for (int i = 0; i < std::min<int64_t>(count, kStacks); ++i) {
    const char header[] = "---- an allocation in the steady state, from:\n";
    (void)!write(STDERR_FILENO, header, sizeof header - 1);
    backtrace_symbols_fd(stacks[i], depths[i], STDERR_FILENO);
  }
}

void expect_no_allocation(Model& model, Strategy& strategy, const ImageSet& data, const FitOptions& base) {
  void* warm[1];
  backtrace(warm, 1);  // loads the unwinder now, not inside the counted window
  if (dnnl_segments == 0) dl_iterate_phdr(find_dnnl, nullptr);
  ASSERT_GT(dnnl_segments, 0) << "libdnnl is not loaded: cannot tell oneDNN's allocations apart";
  const auto counter = std::make_shared<AllocationCounter>(strategy);
  FitOptions options = base;
  options.verbose = 0;
  options.callbacks = {counter};
  options.steps_per_epoch = kWarmupSteps + kCountedSteps + 5;
  model.fit(data, options);
  ASSERT_TRUE(counter->counted());
  if (counter->host() > 0) print_stacks(counter->host());
  EXPECT_EQ(counter->host(), 0) << "host allocations (operator new) in " << kCountedSteps << " steady-state steps";
  EXPECT_EQ(counter->device(), 0) << "device allocations (Backend::allocate) in " << kCountedSteps << " steady-state steps";
  std::cout << "allocations in " << kCountedSteps << " steady-state steps with " << strategy.num_replicas()
            << " replica(s): Mirror " << counter->host() << ", inside oneDNN's primitive execution " << counter->dnnl()
            << ", device buffers " << counter->device() << '\n';
  ::testing::Test::RecordProperty("dnnl_allocations", std::to_string(counter->dnnl()));
}

Sequential reference_cnn(const ImageSet& data) {
  return Sequential({layers::Conv2D(32, {3, 3}, Activation::ReLU, data.sample_shape()), layers::MaxPooling2D({2, 2}),
                     layers::Flatten(), layers::Dense(10, Activation::Softmax)});
}

// The replaced operator new sees what libmirror (a shared library) allocates, so a zero below
// means no allocation, not an allocation the counter missed.
TEST(AllocationCounter, SeesAllocationsInsideLibmirror) {
  allocations.store(0);
  counting.store(true);
  const ImageSet data = data::synthetic_images(4);  // vectors made inside libmirror
  counting.store(false);
  EXPECT_GT(allocations.load(), 0);
  EXPECT_EQ(data.count, 4);
}

class Allocations : public ::testing::TestWithParam<int> {};

TEST_P(Allocations, ReferenceCnnFitsWithoutAllocating) {
  const ImageSet data = data::synthetic_images(32 * 130);
  HostStrategy strategy(GetParam());
  Sequential model = reference_cnn(data);
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 42);
  expect_no_allocation(model, strategy, data, {.batch_size = 32, .seed = 1});
}

// Tracing records into buffers sized when fit starts: a traced step allocates nothing either.
TEST_P(Allocations, TracedFitAllocatesNothingEither) {
  const ImageSet data = data::synthetic_images(32 * 130);
  HostStrategy strategy(GetParam());
  Sequential model = reference_cnn(data);
  model.compile(strategy, optimizers::Adam(), losses::SparseCategoricalCrossentropy(), {metrics::Accuracy()}, 42);
  const std::string path = ::testing::TempDir() + "mirror_allocations_trace.json";
  expect_no_allocation(model, strategy, data, {.batch_size = 32, .seed = 1, .trace = path});
  EXPECT_GT(strategy.tracer().recorded(), 0u);
  std::remove(path.c_str());
}

// More kinds of layer and a clipping optimizer: batch normalization with its collectives, dropout,
// average pooling, a residual sum, small gradient buckets.
TEST_P(Allocations, GraphWithNormalizationFitsWithoutAllocating) {
  const ImageSet data = data::synthetic_images(32 * 130, 12, 12);
  HostStrategy strategy(GetParam());
  Tensor x = Input(data.sample_shape());
  Tensor y = layers::Conv2D(8, {3, 3}, {.padding = Padding::Same})(x);
  y = layers::ReLU()(layers::BatchNormalization({.synchronized = true})(y));
  Tensor z = layers::Conv2D(8, {3, 3}, {.padding = Padding::Same, .use_bias = false})(y);
  y = layers::Add()({y, layers::BatchNormalization()(z)});
  y = layers::AveragePooling2D({2, 2})(y);
  y = layers::Dropout(0.25f)(layers::Dense(16, Activation::ReLU)(layers::Flatten()(y)));
  Model model(x, layers::Dense(10, Activation::Softmax)(y));
  model.compile(strategy, optimizers::Adam({.common = {.clipnorm = 1.0f}}), losses::SparseCategoricalCrossentropy(),
                {metrics::Accuracy(), metrics::SparseTopKCategoricalAccuracy(3)}, 42);
  expect_no_allocation(model, strategy, data, {.batch_size = 32, .seed = 1, .gradient_bucket_bytes = 4096});
}

INSTANTIATE_TEST_SUITE_P(Replicas, Allocations, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_replicas"; });

}  // namespace
}  // namespace mirror
