#!/usr/bin/env python3
"""The alpha-beta cost model of a ring all-reduce, fitted to bench_collectives' cross-process
measurements, and a PROJECTION of ResNet-50's step time and scaling efficiency on clusters these
machines are not: 1-64 nodes x 8 GPUs on 100 and 400 Gbit/s networks.

Ring all-reduce of S bytes over n ranks: t(S) = 2(n-1) alpha + 2(n-1)/n S beta, alpha the per-hop
latency, beta the seconds per byte of one rank's link. The fit minimises the relative error
(weights 1/t^2), since the sizes span 4 B ... 100 MB.

Reads every bench_collectives JSON of a cross-process run in the given folders (the medians of
--benchmark_repetitions, or the single runs); writes the fits, the per-step figures of the network
simulation (benchmarks/netem/run.sh) and the projection as text. Python 3 standard library only.

Usage: benchmarks/projection/alpha_beta.py [--inputs benchmarks/projection/inputs.json]
           [--results benchmarks/results] [--out benchmarks/results/projection.txt]
"""
import argparse
import glob
import json
import os
import re
import statistics


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

def read_json(path):
    """The file's JSON, or {} when it is not (yet) complete: a run still writing it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError:
        return {}


def load_points(path):
    """{(sums, ranks): [(bytes, seconds), ...]} from one bench_collectives JSON (medians)."""
    data = read_json(path)
    runs = {}
    for b in data.get("benchmarks", []):
        m = re.match(r"mpi_all_reduce/replicas:(\d+)/bytes:(\d+)/fast:(\d)", b.get("run_name", b["name"]))
        if not m or b.get("error_occurred"):
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        key = ("mpi" if m.group(3) == "1" else "rank", int(b["ranks"]))
        size = int(m.group(2))
        runs.setdefault(key, {}).setdefault(size, []).append((b.get("run_type"), b["time_us"] * 1e-6))
    points = {}
    for key, sizes in runs.items():
        pts = []
        for size, samples in sorted(sizes.items()):
            medians = [t for kind, t in samples if kind == "aggregate"]
            pts.append((size, medians[0] if medians else statistics.median(t for _, t in samples)))
        points[key] = pts
    return points


def fit_ring(points, n):
    """Least squares in relative error of t = A + B S; alpha = A / 2(n-1), beta = B n / 2(n-1)."""
    sw = sws = swss = swt = swst = 0.0
    for s, t in points:
        w = 1.0 / (t * t)
        sw += w
        sws += w * s
        swss += w * s * s
        swt += w * t
        swst += w * s * t
    det = sw * swss - sws * sws
    a = (swss * swt - sws * swst) / det
    b = (sw * swst - sws * swt) / det
    alpha = a / (2 * (n - 1))
    beta = b * n / (2 * (n - 1))
    errors = [abs(ring_time(s, n, alpha, beta) - t) / t for s, t in points]
    return {"alpha_s": alpha, "beta_s_per_byte": beta, "max_rel_error": max(errors),
            "median_rel_error": statistics.median(errors)}


def ring_time(num_bytes, n, alpha, beta):
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * num_bytes * beta


def parse_rate_gbit(profile):
    m = re.search(r"(\d+(?:\.\d+)?)gbit", profile)
    return float(m.group(1)) if m else None


def parse_delay_s(profile):
    m = re.search(r"_(\d+(?:\.\d+)?)us", profile)
    return float(m.group(1)) * 1e-6 if m else 0.0


def load_step_runs(path):
    """bench_step_scaling's runs (not its aggregates) from a JSON file."""
    data = read_json(path)
    return [b for b in data.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration" and "step_ms" in b]


def median_step_seconds(path):
    """{'host': s, 'multi-worker': s} from netem/run.sh's step file: median epoch seconds."""
    runs = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"(host|multi-worker) run \d+: ([0-9.]+)", line)
            if m:
                runs.setdefault(m.group(1), []).append(float(m.group(2)))
    return {k: statistics.median(v) for k, v in runs.items()}


# ---------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------

def buckets(total_bytes, bucket_bytes):
    """Bucket sizes in the order they become ready (reverse layer order; the last holds the rest)."""
    sizes = []
    left = total_bytes
    while left > 0:
        sizes.append(min(bucket_bytes, left))
        left -= sizes[-1]
    return sizes


def hierarchical_time(num_bytes, nodes, net, inputs):
    """Reduce-scatter inside the node (NVLink), ring all-reduce of each GPU's 1/g share across the
    nodes (g rails sharing the node's network rate), all-gather inside the node."""
    node = inputs["node"]
    g = node["gpus"]
    intra = 2 * (g - 1) * node["intra_alpha_us"] * 1e-6 + 2 * (g - 1) / g * num_bytes / (node["intra_busbw_GBps"] * 1e9)
    if nodes == 1:
        return intra
    rail_beta = g / (net["efficiency"] * net["gbit"] * 1e9 / 8)  # each of the g rails gets 1/g of the node's rate
    return intra + ring_time(num_bytes / g, nodes, net["alpha_s"], rail_beta)


def step_times(nodes, net, inputs):
    m, c = inputs["model"], inputs["compute"]
    total = m["gradient_floats"] * m["bytes_per_gradient_value"]
    compute = c["batch_per_gpu"] / c["images_per_second"]
    backward = compute * c["backward_share"]
    sizes = buckets(total, m["bucket_bytes"])
    per_bucket = [hierarchical_time(s, nodes, net, inputs) for s in sizes]
    comm = sum(per_bucket)
    no_overlap = compute + comm
    # Optimistic overlap: every bucket but the last may run while backward computes (one channel,
    # in order); the last (the first layers' gradients) is ready only when backward ends.
    overlap = (compute - backward) + max(backward, sum(per_bucket[:-1])) + per_bucket[-1]
    return compute, comm, no_overlap, overlap


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", default=os.path.join(here, "inputs.json"))
    p.add_argument("--results", default=os.path.join(here, "..", "results"))
    p.add_argument("--out", default=None, help="also write the report here")
    args = p.parse_args()
    with open(args.inputs) as f:
        inputs = json.load(f)
    lines = []
    say = lines.append

    # 1. Fits, one per (measurement file, order of the sums).
    fits = {}
    files = sorted(glob.glob(os.path.join(args.results, "mpi_collectives_*.json")) +
                   glob.glob(os.path.join(args.results, "netem", "collectives_*.json")))
    say("== Fits of t = 2(n-1) alpha + 2(n-1)/n S beta (relative least squares, sizes 4 B ... 100 MB)")
    say(f"{'measurement':<34} {'sums':>4} {'n':>2} {'alpha us':>9} {'1/beta GB/s':>11} {'rate/n GB/s':>11}"
        f" {'achieved':>8} {'med err':>7} {'max err':>7}")
    for path in files:
        name = os.path.basename(path)[:-5]
        for (sums, n), pts in sorted(load_points(path).items()):
            fit = fit_ring(pts, n)
            fits[(name, sums)] = dict(fit, n=n, points=pts)
            rate = parse_rate_gbit(name)
            # The shaped loopback is one medium shared by all n workers: each gets rate / n.
            share = rate / 8 / n if rate else None
            achieved = (1 / fit["beta_s_per_byte"] / 1e9) / share if share else None
            say(f"{name:<34} {sums:>4} {n:>2} {fit['alpha_s'] * 1e6:9.1f} {1 / fit['beta_s_per_byte'] / 1e9:11.3f}"
                f" {share if share else float('nan'):11.3f} {achieved if achieved else float('nan'):8.2f}"
                f" {fit['median_rel_error']:7.0%} {fit['max_rel_error']:7.0%}")
    if not fits:
        say("(no cross-process measurements found)")

    # 2. Per step in the simulation: the reference CNN's and ResNet-50's gradients.
    m = inputs["model"]
    resnet_bytes = m["gradient_floats"] * m["bytes_per_gradient_value"]
    cnn_bytes = 54416 * 4
    say("")
    say("== Per step, network simulation (MPI over TCP in a namespace; rank-order sums, the default)")
    say("   measured: one all-reduce of the whole gradient; +delay: the fit with the profile's delay added to")
    say("   alpha (the kernel had no netem: the delay itself was not applied); buckets: ResNet-50's 4 buckets")
    say(f"{'profile':<16} {'n':>2} {'CNN ms':>8} {'CNN+delay':>9} {'R50 ms':>9} {'R50+delay':>9} {'R50 buckets':>11}")
    for (name, sums), fit in sorted(fits.items()):
        if not name.startswith("collectives_") or sums != "rank":
            continue
        profile = name[len("collectives_"):name.rindex("_np")]
        n, pts = fit["n"], dict(fit["points"])
        delay = parse_delay_s(profile)
        a, b = fit["alpha_s"], fit["beta_s_per_byte"]
        with_delay = lambda s: ring_time(s, n, a + delay, b)
        in_buckets = sum(ring_time(s, n, a + delay, b) for s in buckets(resnet_bytes, m["bucket_bytes"]))
        say(f"{profile:<16} {n:>2} {pts.get(cnn_bytes, float('nan')) * 1e3:8.2f} {with_delay(cnn_bytes) * 1e3:9.2f}"
            f" {pts.get(resnet_bytes, float('nan')) * 1e3:9.1f} {with_delay(resnet_bytes) * 1e3:9.1f} {in_buckets * 1e3:11.1f}")

    # 3. How much of the added transfer the step hides. Each step is compared with the same step on
    # the unshaped loopback: what shaping adds to the all-reduce alone against what it adds to the
    # step. (One process with as many replicas is no zero-communication reference: its replicas
    # meet in memory at a cost of their own, and it was slower than the workers unshaped.)
    steps = {}  # (model, profile, n) -> (step s, all-reduce alone s)
    for path in sorted(glob.glob(os.path.join(args.results, "netem", "step_*.txt"))):
        name = os.path.basename(path)[len("step_"):-4]
        profile, n = name[:name.rindex("_np")], int(name[name.rindex("_np") + 3:])
        med = median_step_seconds(path)
        fit = fits.get((f"collectives_{name}", "rank"))
        alone = dict(fit["points"]).get(cnn_bytes) if fit else None
        if "multi-worker" in med and alone:
            steps[("cnn", profile, n)] = (med["multi-worker"] / 500, alone, med.get("host", float("nan")) / 500)
    for path in sorted(glob.glob(os.path.join(args.results, "netem", "resnet50_*_np*.json"))):
        name = os.path.basename(path)[len("resnet50_"):-5]
        profile, n = name[:name.rindex("_np")], int(name[name.rindex("_np") + 3:])
        runs = load_step_runs(path)
        if runs:
            step = statistics.median(b["step_ms"] for b in runs) * 1e-3
            alone = statistics.median(b["allreduce_alone"] for b in runs) * step
            steps[("resnet50", profile, n)] = (step, alone, float("nan"))
    one_path = os.path.join(args.results, "netem", "resnet50_one_process.json")
    if os.path.exists(one_path):
        by_n = {}
        for b in load_step_runs(one_path):
            by_n.setdefault(int(b["replicas"]), []).append(b["step_ms"] * 1e-3)
        for (model, profile, n), (step, alone, _) in list(steps.items()):
            if model == "resnet50" and n in by_n:
                steps[(model, profile, n)] = (step, alone, statistics.median(by_n[n]))
    say("")
    say("== How much of the added transfer the step hides: each profile against the unshaped loopback")
    say("   cnn: train_cnn, 500 steps of batch 32 (median of the runs); resnet50: bench_step_scaling,")
    say("   batch 2 per worker (median of the timed fit() calls); alone: the gradient's all-reduce by itself;")
    say("   hidden = 1 - (step - step unshaped) / (alone - alone unshaped), n/b where the shaping does not bind")
    say("   (it adds less than half the unshaped all-reduce: the runs' noise); 1 proc: one process, n replicas")
    say(f"{'model':<9} {'profile':<12} {'n':>2} {'step ms':>9} {'alone ms':>9} {'+step ms':>9} {'+alone ms':>9}"
        f" {'hidden':>7} {'1 proc ms':>9}")
    for (model, profile, n), (step, alone, one_proc) in sorted(steps.items()):
        ref = steps.get((model, "none", n))
        if ref and profile != "none":
            added_step, added_alone = step - ref[0], alone - ref[1]
            # Where shaping adds less than half the unshaped all-reduce (the rate is above what these
            # cores move anyway), the difference is noise between runs, not hidden transfer.
            binds = added_alone > 0.5 * ref[1]
            hidden = f"{1 - added_step / added_alone:7.0%}" if binds else f"{'n/b':>7}"
            added = f"{added_step * 1e3:9.2f} {added_alone * 1e3:9.2f} {hidden}"
        else:
            added = f"{'-':>9} {'-':>9} {'-':>7}"
        say(f"{model:<9} {profile:<12} {n:>2} {step * 1e3:9.2f} {alone * 1e3:9.2f} {added} {one_proc * 1e3:9.2f}")

    # 4. The projection.
    c = inputs["compute"]
    base = fits.get(("collectives_none_np2", "rank")) or fits.get(("mpi_collectives_tcp_np2", "rank"))
    shaped = [f for (name, sums), f in fits.items() if name.startswith("collectives_1gbit") and sums == "rank"]
    alpha_sw = base["alpha_s"] if base else 20e-6
    efficiencies = []
    for (name, sums), f in fits.items():
        rate = parse_rate_gbit(name)
        if name.startswith("collectives_1gbit") and sums == "rank" and rate:
            efficiencies.append((1 / f["beta_s_per_byte"]) / (rate * 1e9 / 8 / f["n"]))
    efficiency = min(1.0, statistics.median(efficiencies)) if efficiencies else 0.9
    alpha = alpha_sw + inputs["wire_latency_us"] * 1e-6
    say("")
    say("== PROJECTION (a model, not a measurement): ResNet-50 data-parallel step, N nodes x 8 GPUs")
    say(f"   compute: {c['gpu']}, {c['images_per_second']} img/s at batch {c['batch_per_gpu']} per GPU ->"
        f" {c['batch_per_gpu'] / c['images_per_second'] * 1e3:.1f} ms per step; backward {c['backward_share']:.0%} of it")
    say(f"   gradient: {m['gradient_floats']:,} fp32 values = {resnet_bytes / 1e6:.1f} MB in"
        f" {len(buckets(resnet_bytes, m['bucket_bytes']))} buckets of at most {m['bucket_bytes'] / 2**20:.0f} MiB")
    say("   all-reduce ms: the step's buckets, one after the other, each as below")
    say(f"   all-reduce: hierarchical - NVLink inside the node (busbw {inputs['node']['intra_busbw_GBps']} GB/s,"
        f" alpha {inputs['node']['intra_alpha_us']} us), ring across nodes on 8 rails sharing the node's rate")
    say(f"   network alpha per hop {alpha * 1e6:.1f} us = {alpha_sw * 1e6:.1f} us fitted (MPI over TCP, unshaped, 2 workers)"
        f" + {inputs['wire_latency_us']} us wire; achieved fraction of the rate {efficiency:.2f}"
        f" (fitted on the 1 Gbit/s profile{'' if shaped else '; none measured: assumed'})")
    say("   efficiency = one GPU's compute time / step time (throughput per GPU against one GPU alone);")
    say("   overlap = every bucket but the last all-reduced during backward (optimistic)")
    say("   busbw: nccl-tests' bus bandwidth of one all-reduce of the whole gradient over every GPU")
    say(f"{'nodes':>5} {'GPUs':>5} {'Gbit/s':>6} {'busbw GB/s':>10} {'all-reduce ms':>13} {'step ms':>8} {'eff':>5}"
        f" {'step ms (overlap)':>17} {'eff':>5} {'img/s (overlap)':>15}")
    for gbit in inputs["networks_gbit"]:
        net = {"gbit": gbit, "alpha_s": alpha, "efficiency": efficiency}
        for nodes in inputs["nodes"]:
            compute, comm, plain, overlapped = step_times(nodes, net, inputs)
            gpus = nodes * inputs["node"]["gpus"]
            busbw = resnet_bytes / hierarchical_time(resnet_bytes, nodes, net, inputs) * 2 * (gpus - 1) / gpus / 1e9
            say(f"{nodes:>5} {gpus:>5} {gbit:>6} {busbw:10.1f} {comm * 1e3:13.2f} {plain * 1e3:8.1f} {compute / plain:5.0%}"
                f" {overlapped * 1e3:17.1f} {compute / overlapped:5.0%} {gpus * c['batch_per_gpu'] / overlapped:15,.0f}")
    say("")
    say("Published figures to read beside it:")
    for line in inputs["published"]:
        say("- " + line)

    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
