// Tracer (see trace.hpp): the span buffers and the Chrome trace-event writer.
#include "mirror/engine/trace.hpp"

#include <cstdio>
#include <fstream>

#include "mirror/engine/error.hpp"

namespace mirror {
namespace {

// `s` as a JSON string literal.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + '"';
}

// Nanoseconds as the microseconds Chrome's format counts in.
std::string micros(int64_t ns) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", static_cast<double>(ns) / 1000.0);
  return text;
}

}  // namespace

void Tracer::start(std::vector<Lane> lanes, size_t spans_per_lane) {
  lanes_.clear();
  for (Lane& lane : lanes) lanes_.push_back({std::move(lane), std::vector<Span>(spans_per_lane), 0, 0});
  origin_ns_ = now_ns();
  enabled_ = true;
}

int Tracer::name_id(const std::string& name, const std::string& category) {
  // A model names a span per layer: found by hash, not by a scan, so 100,000 layers take linear time.
  const auto [it, fresh] = name_ids_.try_emplace(category + '\0' + name, static_cast<int>(names_.size()));
  if (fresh) names_.push_back({name, category});
  return it->second;
}

size_t Tracer::recorded() const {
  size_t n = 0;
  for (const LaneSpans& l : lanes_) n += l.count;
  return n;
}

size_t Tracer::dropped() const {
  size_t n = 0;
  for (const LaneSpans& l : lanes_) n += l.dropped;
  return n;
}

void Tracer::write_chrome_trace(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MIRROR_REQUIRE(out.good(), Error, "cannot write the trace to '", path, "': check that its directory exists and is writable");
  // Lanes of the same process share a pid (in order of first appearance); each lane is a tid.
  std::vector<std::string> processes;
  std::vector<int> pid_of(lanes_.size());
  for (size_t i = 0; i < lanes_.size(); ++i) {
    size_t p = 0;
    while (p < processes.size() && processes[p] != lanes_[i].lane.process) ++p;
    if (p == processes.size()) processes.push_back(lanes_[i].lane.process);
    pid_of[i] = static_cast<int>(p);
  }
  out << "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"spans\":" << recorded() << ",\"dropped_spans\":" << dropped()
      << "},\"traceEvents\":[\n";
  bool first = true;
  const auto event = [&](const std::string& text) {
    out << (first ? "" : ",\n") << text;
    first = false;
  };
  for (size_t p = 0; p < processes.size(); ++p) {
    event(str("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":", p, ",\"tid\":0,\"args\":{\"name\":",
              json_string(processes[p]), "}}"));
    event(str("{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":", p, ",\"tid\":0,\"args\":{\"sort_index\":", p, "}}"));
  }
  for (size_t i = 0; i < lanes_.size(); ++i) {
    event(str("{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":", pid_of[i], ",\"tid\":", i, ",\"args\":{\"name\":",
              json_string(lanes_[i].lane.thread), "}}"));
    event(str("{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":", pid_of[i], ",\"tid\":", i,
              ",\"args\":{\"sort_index\":", i, "}}"));
  }
  for (size_t i = 0; i < lanes_.size(); ++i) {
    const LaneSpans& l = lanes_[i];
    for (size_t k = 0; k < l.count; ++k) {
      const Span& s = l.spans[k];
      const Name& n = names_[static_cast<size_t>(s.name)];
      const int64_t begin_ns = l.clock ? l.clock->time_ns(s.begin) : s.begin;
      const int64_t end_ns = l.clock ? l.clock->time_ns(s.end) : s.end;
      event(str("{\"ph\":\"X\",\"name\":", json_string(n.name), ",\"cat\":", json_string(n.category), ",\"pid\":",
                pid_of[i], ",\"tid\":", i, ",\"ts\":", micros(begin_ns - origin_ns_), ",\"dur\":",
                micros(end_ns - begin_ns), ",\"args\":{\"step\":", s.step, "}}"));
    }
  }
  out << "\n]}\n";
  out.close();
  MIRROR_REQUIRE(out.good(), Error, "writing the trace to '", path, "' failed (disk full?)");
}

}  // namespace mirror
