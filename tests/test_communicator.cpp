// HostCommunicator: closed-form results with every rank filled from its rank number, bitwise
// agreement, aborts and timeouts that turn a hang into an error.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "mirror/collectives/host_communicator.hpp"
#include "mirror/engine/error.hpp"
#include "test_util.hpp"

using mirror::testing::on_ranks;

namespace mirror {
namespace {

class AllReduce : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(AllReduce, SumsRankFilledBuffersInPlace) {
  const auto [size, count] = GetParam();
  HostCommunicator comm(size);
  std::vector<std::vector<float>> buffers(static_cast<size_t>(size), std::vector<float>(count));
  for (int r = 0; r < size; ++r)
    for (size_t i = 0; i < count; ++i) buffers[static_cast<size_t>(r)][i] = float(r + 1) + 0.5f * float(i % 7);
  const auto errors = on_ranks(size, [&](int r) {
    comm.barrier(r);  // sequence numbers advance across collectives of different kinds
    comm.all_reduce_sum(r, buffers[static_cast<size_t>(r)]);
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
  const float rank_sum = float(size * (size + 1)) / 2.0f;
  for (size_t i = 0; i < count; ++i) EXPECT_FLOAT_EQ(buffers[0][i], rank_sum + float(size) * 0.5f * float(i % 7)) << i;
  for (int r = 1; r < size; ++r)
    EXPECT_EQ(std::memcmp(buffers[static_cast<size_t>(r)].data(), buffers[0].data(), count * sizeof(float)), 0) << r;
}

INSTANTIATE_TEST_SUITE_P(RanksAndCounts, AllReduce,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4), ::testing::Values(size_t{1}, size_t{5}, size_t{1000}, size_t{65537})));

TEST(HostCommunicator, BroadcastCopiesTheRoot) {
  HostCommunicator comm(3);
  std::vector<std::vector<float>> buffers{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}};
  on_ranks(3, [&](int r) { comm.broadcast(r, buffers[static_cast<size_t>(r)], 1); });
  for (const auto& b : buffers) EXPECT_EQ(b, (std::vector<float>{4, 5, 6}));
}

TEST(HostCommunicator, AbortReleasesWaitingRanks) {
  HostCommunicator comm(2);
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    comm.abort("replica 1 failed");
  });
  EXPECT_THROW(comm.barrier(0), CollectiveError);
  aborter.join();
  // Every later collective fails too.
  std::vector<float> data(4, 1.0f);
  EXPECT_THROW(comm.all_reduce_sum(0, data), CollectiveError);
}

TEST(HostCommunicator, TimeoutNamesOperationSequenceAndRank) {
  HostCommunicator comm(2);
  comm.set_timeout(std::chrono::milliseconds(100));
  std::vector<float> data(8, 1.0f);
  try {
    comm.all_reduce_sum(1, data, "gradient all_reduce");
    FAIL() << "expected a timeout";
  } catch (const CollectiveError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("gradient all_reduce #0"), std::string::npos) << message;
    EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
    EXPECT_NE(message.find("1 of 2"), std::string::npos) << message;
  }
}

TEST(HostCommunicator, MismatchedCountsAreAnError) {
  HostCommunicator comm(2);
  std::vector<float> a(4), b(5);
  const auto errors = on_ranks(2, [&](int r) { comm.all_reduce_sum(r, r == 0 ? std::span<float>(a) : std::span<float>(b)); });
  for (const auto& e : errors) EXPECT_NE(e.find("passed 5 elements"), std::string::npos) << e;
}

}  // namespace
}  // namespace mirror
