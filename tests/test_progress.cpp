// Tests for the Keras-3-style progress bar: render() formatting (counter padding, 20-character
// bar, ETA versus elapsed time, time per step, sorted values) and what update()/finish() write;
// and the engine's log level.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>

#include "mirror/engine/progress.hpp"
#include "mirror/engine/verbosity.hpp"

namespace mirror {
namespace {

const std::string kBar = "\u2501";  // '━'

std::string bar(int count) {
  std::string s;
  for (int i = 0; i < count; ++i) s += kBar;
  return s;
}

int count_of(const std::string& text, const std::string& piece) {
  int n = 0;
  for (size_t at = text.find(piece); at != std::string::npos; at = text.find(piece, at + piece.size())) ++n;
  return n;
}

TEST(ProgressRender, FinalLineLikeKeras) {
  std::ostringstream out;
  ProgressBar progress(1875, out, false);
  // 2.4375 s over 1875 steps is 1.3 ms a step.
  const std::string line =
      progress.render(1875, 2.4375, {{"loss", 0.47831}, {"accuracy", 0.86044}}, true, false);
  EXPECT_EQ(line, "1875/1875 " + bar(20) + " 2s 1ms/step - accuracy: 0.8604 - loss: 0.4783");
}

TEST(ProgressRender, RunningLinePadsTheCounterAndShowsTheEta) {
  std::ostringstream out;
  ProgressBar progress(20, out, false);
  // 10 of 20 steps in 1 s: half the bar, 0.1 s a step, 1 s to go.
  EXPECT_EQ(progress.render(10, 1.0, {{"loss", 2.5}}, false, false),
            "10/20 " + bar(20) + " 1s 100ms/step - loss: 2.5000");
  EXPECT_EQ(progress.render(3, 0.3, {}, false, false), " 3/20 " + bar(20) + " 1s 100ms/step");
}

TEST(ProgressRender, EtaUsesMinutesAndHours) {
  std::ostringstream out;
  ProgressBar progress(1875, out, false);
  // 0.2 s a step with 1870 left: 374 s.
  EXPECT_EQ(progress.render(5, 1.0, {}, false, false), "   5/1875 " + bar(20) + " 6:14 200ms/step");
  // 2 s a step with 1870 left: 3740 s.
  EXPECT_EQ(progress.render(5, 10.0, {}, false, false), "   5/1875 " + bar(20) + " 1:02:20 2s/step");
}

TEST(ProgressRender, TimePerStepUnits) {
  std::ostringstream out;
  ProgressBar progress(100, out, false);
  EXPECT_EQ(progress.render(100, 0.025, {}, true, false), "100/100 " + bar(20) + " 0s 250us/step");
  EXPECT_EQ(progress.render(100, 200.0, {}, true, false), "100/100 " + bar(20) + " 200s 2s/step");
  EXPECT_EQ(progress.render(100, 0.5, {}, true, false), "100/100 " + bar(20) + " 0s 5ms/step");
}

TEST(ProgressRender, BarIsAlwaysTwentyWide) {
  std::ostringstream out;
  ProgressBar progress(7, out, false);
  for (int64_t step = 0; step <= 7; ++step) {
    EXPECT_EQ(count_of(progress.render(step, 1.0, {}, step == 7, false), kBar), 20) << "step " << step;
    EXPECT_EQ(count_of(progress.render(step, 1.0, {}, step == 7, true), kBar), 20) << "step " << step;
  }
}

TEST(ProgressRender, ValuesAreSortedWithFourDecimals) {
  std::ostringstream out;
  ProgressBar progress(1, out, false);
  const std::string line =
      progress.render(1, 1.0, {{"val_loss", 1.0}, {"loss", 1234.56789}, {"accuracy", 0.5}, {"lr", 0.0001}}, true,
                      false);
  EXPECT_NE(line.find(" - accuracy: 0.5000 - loss: 1234.5679 - lr: 1.0000e-04 - val_loss: 1.0000"),
            std::string::npos)
      << line;
}

TEST(ProgressRender, ColourMarksDoneAndRemainingParts) {
  std::ostringstream out;
  ProgressBar progress(20, out, true);
  const std::string plain = progress.render(5, 1.0, {{"loss", 1}}, false, false);
  const std::string coloured = progress.render(5, 1.0, {{"loss", 1}}, false, true);
  EXPECT_EQ(plain.find('\x1b'), std::string::npos) << plain;
  EXPECT_NE(coloured.find("\x1b[1m 5/20\x1b[0m "), std::string::npos) << coloured;
  EXPECT_NE(coloured.find("\x1b[32m" + bar(5) + "\x1b[0m\x1b[37m" + bar(15) + "\x1b[0m"), std::string::npos)
      << coloured;
  // No green segment at all before the first twentieth is done.
  EXPECT_EQ(progress.render(0, 0.0, {}, false, true).find("\x1b[32m"), std::string::npos);
}

TEST(ProgressRender, IsDeterministic) {
  std::ostringstream out;
  ProgressBar progress(50, out, true);
  EXPECT_EQ(progress.render(17, 3.3, {{"a", 1}, {"b", 2}}, false, true),
            progress.render(17, 3.3, {{"b", 2}, {"a", 1}}, false, true));
}

TEST(ProgressOutput, NonInteractivePrintsOneFinalLine) {
  std::ostringstream out;
  ProgressBar progress(3, out, false);
  for (int64_t step = 1; step <= 3; ++step) progress.update(step, {{"loss", 0.5}});
  EXPECT_EQ(out.str(), "");
  progress.finish({{"loss", 0.25}}, " - 1000 samples/s");
  const std::string text = out.str();
  EXPECT_EQ(count_of(text, "\n"), 1);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.rfind("3/3 " + bar(20) + " ", 0), 0u) << text;
  EXPECT_NE(text.find(" - loss: 0.2500 - 1000 samples/s\n"), std::string::npos) << text;
}

TEST(ProgressOutput, InteractiveRedrawsInPlaceAndThrottles) {
  std::ostringstream out;
  ProgressBar progress(1000, out, true);
  progress.update(1, {{"loss", 1}});  // the first step is always drawn
  EXPECT_EQ(count_of(out.str(), "\r"), 1);
  EXPECT_EQ(out.str().front(), '\r');
  // Rapid updates redraw at most once per 50 ms; bound the draws by the time taken so a slow
  // machine cannot make the test fail.
  const auto begin = std::chrono::steady_clock::now();
  for (int64_t step = 2; step < 1000; ++step) progress.update(step, {{"loss", 1}});
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
  const int draws = count_of(out.str(), "\r");
  EXPECT_LE(draws, 2 + static_cast<int>(elapsed_ms / 50)) << "in " << elapsed_ms << " ms";
  progress.update(1000, {{"loss", 1}});  // the final step is always drawn
  EXPECT_EQ(count_of(out.str(), "\r"), draws + 1);
  EXPECT_EQ(out.str().find('\n'), std::string::npos);
  progress.finish({{"loss", 1}});
  const std::string text = out.str();
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(count_of(text, "\n"), 1);
  EXPECT_NE(text.find("\x1b[1m1000/1000\x1b[0m"), std::string::npos);
}

TEST(ProgressOutput, OnlyStandardStreamsCanBeTerminals) {
  std::ostringstream out;
  EXPECT_FALSE(ProgressBar::is_terminal(out));
}

TEST(Verbosity, LinesAppearFromTheirLevelOn) {
  const int saved = verbosity();
  set_verbosity(1);
  ::testing::internal::CaptureStderr();
  verbose_log(2, "hidden at 1");
  set_verbosity(2);
  verbose_log(2, "shown at 2");
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_verbosity(saved);
  EXPECT_EQ(err, "shown at 2\n");
}

}  // namespace
}  // namespace mirror
