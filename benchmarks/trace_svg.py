#!/usr/bin/env python3
"""Draws a Chrome trace-event file written by fit (FitOptions::trace, train_cnn --trace) as an SVG
timeline: one row per lane (each replica's compute stream and its all-reduce stream), spans nested
in sub-rows, coloured by phase, so the overlap of the all-reduce with backward shows without a
browser. Python's standard library only.

    benchmarks/trace_svg.py trace.json -o timeline.svg [--last-steps 4] [--width 1400]
"""
import argparse
import html
import json
import sys

COLOURS = {
    "step": "#d9d9d9",
    "gather": "#8c564b",
    "forward": "#1f77b4",
    "loss": "#9467bd",
    "backward": "#ff7f0e",
    "all_reduce": "#2ca02c",
    "all_reduce_wait": "#d62728",
    "optimizer": "#e377c2",
    "read_totals": "#17becf",
}
ROW = 16        # pixels per nesting level
LANE_GAP = 10
TOP = 46
AXIS = 34


def load(path):
    with open(path, encoding="utf-8") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    processes, threads, spans = {}, {}, {}
    for e in events:
        lane = (e.get("pid", 0), e.get("tid", 0))
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[lane[0]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[lane] = e["args"]["name"]
        elif e.get("ph") == "X":
            spans.setdefault(lane, []).append(e)
    return processes, threads, spans


def select_steps(spans, last_steps):
    """Keeps the spans of the last `last_steps` steps (by args.step) that every lane ran."""
    if not last_steps:
        return spans
    steps = sorted({e.get("args", {}).get("step", 0) for lane in spans.values() for e in lane})
    keep = set(steps[-last_steps:])
    return {lane: [e for e in es if e.get("args", {}).get("step", 0) in keep] for lane, es in spans.items()}


def with_depths(events):
    """(event, depth) pairs: a span's depth is how many spans of its lane hold it."""
    out, open_ends = [], []
    for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        while open_ends and e["ts"] >= open_ends[-1] - 0.002:
            open_ends.pop()
        out.append((e, len(open_ends)))
        open_ends.append(e["ts"] + e["dur"])
    return out


def nice_tick(span_us, width_px):
    target = span_us / max(1, width_px / 110)
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000):
        if step >= target:
            return step
    return 1000000


def draw(processes, threads, spans, width, title):
    lanes = sorted(lane for lane in spans if spans[lane])
    if not lanes:
        sys.exit("the trace holds no spans")
    names = {lane: f'{processes.get(lane[0], f"pid {lane[0]}")} · {threads.get(lane, f"tid {lane[1]}")}' for lane in lanes}
    left = 16 + 6.4 * max(len(n) for n in names.values())  # room for the lane names
    begin = min(e["ts"] for lane in lanes for e in spans[lane])
    end = max(e["ts"] + e["dur"] for lane in lanes for e in spans[lane])
    scale = (width - left - 20) / max(end - begin, 1e-9)
    x = lambda ts: left + (ts - begin) * scale

    body, y = [], TOP
    for lane in lanes:
        placed = with_depths(spans[lane])
        depth = 1 + max(d for _, d in placed)
        body.append(f'<text x="{left - 8:.0f}" y="{y + ROW * depth / 2 + 4:.1f}" text-anchor="end">{html.escape(names[lane])}</text>')
        body.append(f'<rect x="{left}" y="{y}" width="{width - left - 20}" height="{ROW * depth}" fill="#f7f7f7"/>')
        for e, d in placed:
            colour = COLOURS.get(e.get("cat", ""), "#bcbd22")
            w = max(e["dur"] * scale, 0.5)
            label = f'{e["name"]} (step {e.get("args", {}).get("step", "?")}): {e["dur"] / 1000:.3f} ms'
            body.append(f'<rect x="{x(e["ts"]):.2f}" y="{y + d * ROW + 1}" width="{w:.2f}" height="{ROW - 2}" '
                        f'fill="{colour}"><title>{html.escape(label)}</title></rect>')
        y += ROW * depth + LANE_GAP

    tick = nice_tick(end - begin, width - left)
    axis = [f'<line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#444"/>']
    t = 0.0
    while t <= end - begin + 1e-9:
        axis.append(f'<line x1="{x(begin + t):.1f}" y1="{y}" x2="{x(begin + t):.1f}" y2="{y + 5}" stroke="#444"/>')
        axis.append(f'<text x="{x(begin + t):.1f}" y="{y + 17}" text-anchor="middle">{t / 1000:g} ms</text>')
        t += tick
    y += AXIS
    legend, lx = [], left
    for category, colour in COLOURS.items():
        legend.append(f'<rect x="{lx}" y="{y}" width="12" height="12" fill="{colour}"/>')
        legend.append(f'<text x="{lx + 16}" y="{y + 10}">{category.replace("_", " ")}</text>')
        lx += 30 + 7 * len(category)
    height = y + 28
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="11">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{left}" y="24" font-size="14">{html.escape(title)}</text>')
    return "\n".join([head] + body + axis + legend + ["</svg>\n"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="Chrome trace-event JSON written by fit")
    parser.add_argument("-o", "--output", required=True, help="the SVG file to write")
    parser.add_argument("--last-steps", type=int, default=0, help="draw only the last N steps (0 = all)")
    parser.add_argument("--width", type=int, default=1400, help="picture width in pixels")
    parser.add_argument("--title", default="", help="a line above the timeline (default: the trace's name)")
    args = parser.parse_args()
    processes, threads, spans = load(args.trace)
    spans = select_steps(spans, args.last_steps)
    title = args.title or f"{args.trace}" + (f": last {args.last_steps} steps" if args.last_steps else "")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(draw(processes, threads, spans, args.width, title))


if __name__ == "__main__":
    main()
