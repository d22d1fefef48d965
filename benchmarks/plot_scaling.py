#!/usr/bin/env python3
"""Speedup against replica count, from bench_step_scaling's JSON, as an SVG (standard library only).

    build/benchmarks/bench_step_scaling --benchmark_out=scaling.json --benchmark_out_format=json
    python3 benchmarks/plot_scaling.py scaling.json scaling.svg

Any --model's JSON: the ResNets' names carry a prefix ("resnet50/weak/...") that is skipped.
Speedup is samples/s over the 1-replica run of the same mode (weak: per-replica batch fixed;
strong: global batch fixed). The dashed line is ideal scaling (speedup = replicas); the dotted one
is what the machine's cores allow when each replica owns one core (min(replicas, cores)). Also
prints the table it plotted.
"""
import json
import sys
from xml.sax.saxutils import escape

COLOURS = {"weak": "#1f77b4", "strong": "#d62728"}


def load_points(path):
    """{mode: {replicas: samples_per_s}} from the iteration (or median aggregate) entries."""
    with open(path) as f:
        doc = json.load(f)
    entries = doc["benchmarks"]
    medians = [e for e in entries if e.get("aggregate_name") == "median"]
    chosen = medians or [e for e in entries if e.get("run_type", "iteration") == "iteration"]
    points = {}
    for e in chosen:
        parts = e.get("run_name", e["name"]).split("/")
        mode = parts[1] if parts[0] not in COLOURS and len(parts) > 1 else parts[0]  # "resnet50/weak/..."
        if mode not in COLOURS or "samples_per_s" not in e:
            continue
        points.setdefault(mode, {})[int(e["replicas"])] = float(e["samples_per_s"])
    cores = int(doc.get("context", {}).get("host_cores", doc.get("context", {}).get("num_cpus", 0)) or 0)
    return points, cores, doc.get("context", {})


def speedups(points):
    out = {}
    for mode, by_replicas in points.items():
        if 1 not in by_replicas:
            continue
        base = by_replicas[1]
        out[mode] = sorted((r, sps / base, sps) for r, sps in by_replicas.items())
    return out


def svg(series, cores, context):
    width, height, left, right, top, bottom = 560, 400, 60, 150, 40, 50
    max_r = max([4] + [r for s in series.values() for r, _, _ in s])
    max_y = max([float(max_r)] + [y for s in series.values() for _, y, _ in s])
    pw, ph = width - left - right, height - top - bottom

    def x(r):
        return left + (r - 1) / (max_r - 1) * pw if max_r > 1 else left

    def y(v):
        return top + ph - v / max_y * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']
    model = {"cnn": "Reference CNN", "resnet20": "ResNet-20", "resnet50": "ResNet-50"}.get(
        context.get("model", "cnn"), context.get("model", ""))
    title = f"{model} step: speedup vs host replicas ({context.get('num_cpus', '?')} cores)"
    out.append(f'<text x="{left}" y="22" font-size="14">{escape(title)}</text>')
    for r in range(1, max_r + 1):  # x grid and ticks
        out.append(f'<line x1="{x(r):.1f}" y1="{top}" x2="{x(r):.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x(r):.1f}" y="{top + ph + 18}" text-anchor="middle">{r}</text>')
    step = 0.5 if max_y <= 4 else 1.0
    v = 0.0
    while v <= max_y + 1e-9:
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">replicas</text>')
    out.append(f'<text x="16" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">'
               'speedup (samples/s over 1 replica)</text>')
    out.append(f'<line x1="{x(1):.1f}" y1="{y(1):.1f}" x2="{x(max_r):.1f}" y2="{y(max_r):.1f}" stroke="#555" '
               'stroke-dasharray="6 4"/>')
    legend = [("ideal", "#555", "6 4")]
    if cores:
        pts = " ".join(f"{x(r):.1f},{y(min(r, cores)):.1f}" for r in range(1, max_r + 1))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#999" stroke-dasharray="2 3"/>')
        legend.append((f"{cores} cores", "#999", "2 3"))
    top_at = {}  # replicas -> the highest speedup of any series there
    for pts in series.values():
        for r, s, _ in pts:
            top_at[r] = max(top_at.get(r, 0.0), s)
    for mode, pts in sorted(series.items()):
        colour = COLOURS[mode]
        out.append(f'<polyline points="{" ".join(f"{x(r):.1f},{y(s):.1f}" for r, s, _ in pts)}" fill="none" '
                   f'stroke="{colour}" stroke-width="2"/>')
        for r, s, _ in pts:
            out.append(f'<circle cx="{x(r):.1f}" cy="{y(s):.1f}" r="4" fill="{colour}"/>')
            if r > 1:  # every series is 1.00 at one replica; the top one is labelled above, others below
                dy = -8 if s >= top_at[r] else 16
                out.append(f'<text x="{x(r) + 6:.1f}" y="{y(s) + dy:.1f}" fill="{colour}">{s:.2f}</text>')
        legend.append((f"{mode} scaling", colour, ""))
    for i, (label, colour, dash) in enumerate(legend):
        ly = top + 10 + 20 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ' stroke-width="2"'
        out.append(f'<line x1="{left + pw + 12}" y1="{ly}" x2="{left + pw + 38}" y2="{ly}" stroke="{colour}"{dash_attr}/>')
        out.append(f'<text x="{left + pw + 44}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    points, cores, context = load_points(sys.argv[1])
    series = speedups(points)
    if not series:
        sys.exit(f"{sys.argv[1]}: no weak/ or strong/ results with a 1-replica run")
    print(f"{'mode':<8} {'replicas':>8} {'samples/s':>10} {'speedup':>8} {'efficiency':>10}")
    for mode, pts in series.items():
        for r, s, sps in pts:
            print(f"{mode:<8} {r:>8} {sps:>10.{0 if sps >= 100 else 2}f} {s:>8.2f} {100 * s / r:>9.0f}%")
    with open(sys.argv[2], "w") as f:
        f.write(svg(series, cores, context))
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
