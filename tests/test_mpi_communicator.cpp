// MpiHostCommunicator under mpirun (tests/meson.build runs it with 3 workers): rank-filled closed
// forms for odd sizes from 1 float to past 64 MiB, bitwise the in-process rank-order sum, broadcast
// from any global rank, with 1 and 2 replicas per worker and both orders of the sums.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "mirror/collectives/mpi_host_communicator.hpp"
#include "mirror/collectives/mpi_world.hpp"
#include "mirror/engine/error.hpp"
#include "test_util.hpp"

namespace mirror {
namespace {

using mirror::testing::on_ranks;

// A value of global rank g at index i, not exactly summable, the same in every process.
float noise(int g, size_t i) {
  uint64_t x = (static_cast<uint64_t>(g) << 40) ^ (i * 0x9e3779b97f4a7c15ull);
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return static_cast<float>(static_cast<int64_t>(x % 2000001) - 1000000) * 1e-6f * 3.7f;
}

struct Case {
  int replicas;
  CrossWorkerSum order;
};

class MpiAllReduce : public ::testing::TestWithParam<Case> {};

TEST_P(MpiAllReduce, ClosedFormsForOddSizes) {
  const auto [replicas, order] = GetParam();
  MpiHostCommunicator comm(replicas, order, std::chrono::seconds(60));
  const int world = comm.world_size();
  ASSERT_EQ(world, MpiWorld::get().size() * replicas);
  for (const size_t count : {size_t{1}, size_t{3}, size_t{1000}, size_t{65537}, size_t{1000003}, (size_t{64} << 18) + 3}) {
    std::vector<std::vector<float>> buffers(static_cast<size_t>(replicas), std::vector<float>(count));
    const auto errors = on_ranks(replicas, [&](int r) {
      std::vector<float>& b = buffers[static_cast<size_t>(r)];
      const int g = comm.global_rank(r);
      for (size_t i = 0; i < count; ++i) b[i] = float(g + 1) * float(1 + i % 5);  // sums exactly
      comm.all_reduce_sum_async(r, b, "test all_reduce");
      comm.wait_all(r);
    });
    for (const auto& e : errors) ASSERT_EQ(e, "");
    const float ranks = float(world * (world + 1) / 2);
    for (const auto& b : buffers)
      for (size_t i = 0; i < count; ++i) ASSERT_EQ(b[i], ranks * float(1 + i % 5)) << "count " << count << " at " << i;
  }
}

TEST_P(MpiAllReduce, RankOrderIsBitwiseTheInProcessSum) {
  const auto [replicas, order] = GetParam();
  MpiHostCommunicator comm(replicas, order, std::chrono::seconds(60));
  const int world = comm.world_size();
  const size_t count = 300007;  // several chunks and a short one
  std::vector<std::vector<float>> buffers(static_cast<size_t>(replicas), std::vector<float>(count));
  const auto errors = on_ranks(replicas, [&](int r) {
    std::vector<float>& b = buffers[static_cast<size_t>(r)];
    for (size_t i = 0; i < count; ++i) b[i] = noise(comm.global_rank(r), i);
    comm.all_reduce_sum(r, b, "test all_reduce");
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  // HostCommunicator's order: ((v0 + v1) + v2) + ...
  std::vector<float> expected(count);
  for (size_t i = 0; i < count; ++i) {
    float sum = noise(0, i);
    for (int g = 1; g < world; ++g) sum += noise(g, i);
    expected[i] = sum;
  }
  for (const auto& b : buffers) {
    if (order == CrossWorkerSum::RankOrder) {
      ASSERT_EQ(std::memcmp(b.data(), expected.data(), count * sizeof(float)), 0);
    } else {
      EXPECT_TRUE(mirror::testing::all_close(b, expected, 1e-5, 1e-5));
    }
  }
  // Every worker holds the same bits: compare fingerprints through the world.
  uint64_t hash = 0xcbf29ce484222325ull;
  const auto* bytes = reinterpret_cast<const uint8_t*>(buffers[0].data());
  for (size_t i = 0; i < count * sizeof(float); ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  EXPECT_NO_THROW(MpiWorld::get().agree("the sum's bits", std::to_string(hash)));
}

TEST_P(MpiAllReduce, BroadcastFromEveryGlobalRankAndBarrier) {
  const auto [replicas, order] = GetParam();
  MpiHostCommunicator comm(replicas, order, std::chrono::seconds(60));
  for (int root = 0; root < comm.world_size(); ++root) {
    std::vector<std::vector<float>> buffers(static_cast<size_t>(replicas), std::vector<float>(1001));
    const auto errors = on_ranks(replicas, [&](int r) {
      std::vector<float>& b = buffers[static_cast<size_t>(r)];
      for (size_t i = 0; i < b.size(); ++i) b[i] = float(comm.global_rank(r) * 10000 + int(i));
      comm.barrier(r);
      comm.broadcast(r, b, root);
    });
    for (const auto& e : errors) ASSERT_EQ(e, "");
    for (const auto& b : buffers)
      for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], float(root * 10000 + int(i))) << "root " << root;
  }
}

INSTANTIATE_TEST_SUITE_P(ReplicasAndOrders, MpiAllReduce,
                         ::testing::Values(Case{1, CrossWorkerSum::RankOrder}, Case{2, CrossWorkerSum::RankOrder},
                                           Case{1, CrossWorkerSum::Fast}, Case{2, CrossWorkerSum::Fast}));

TEST(MpiHostCommunicator, WorkersWithOtherReplicaCountsAreRefused) {
  const int replicas = MpiWorld::get().rank() == 0 ? 1 : 2;
  try {
    MpiHostCommunicator comm(replicas);
    FAIL() << "expected a refusal";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("the number of replicas per worker: worker 0 has 1, worker 1 has 2"), std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace mirror
