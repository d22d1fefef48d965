"""The reference job on an idle and on a busy machine: Mirror's train_cnn (one or several builds,
e.g. before and after a change) and PyTorch, each run once with nothing of ours beside it and once
beside `--busy` processes that spin on the CPU (`sh -c 'while :; do :; done'`, started and killed
here), interleaved run by run so that drift in the machine's load hits every job alike. Reports the
median epoch seconds per job and condition and what the busy machine costs each job (busy / idle).

Standard library only; busy.sh calls it with the virtual environment's python for PyTorch.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import compare

ROOT = compare.ROOT


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirror", action="append", default=[], metavar="LABEL=TRAIN_CNN",
                   help="a Mirror build to time (repeatable; default mirror=build/examples/train_cnn)")
    p.add_argument("--frameworks", default="pytorch", help="Python peers, from compare.py's (comma-separated)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--busy", type=int, default=2, help="spinning processes beside the job when busy")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-samples", type=int, default=6400)
    p.add_argument("--data", default=os.environ.get("MIRROR_DATA_DIR") or "/usr/share/datasets/fashion-mnist")
    p.add_argument("--python", default=sys.executable, help="the interpreter with PyTorch")
    p.add_argument("--out", default=os.path.join(ROOT, "build-compare", "busy.json"))
    args = p.parse_args()
    args.mirror = [m.split("=", 1) for m in args.mirror or ["mirror=" + os.path.join(ROOT, "build", "examples", "train_cnn")]]
    return args


class Spinners:
    """`count` processes that keep a core busy each, for the length of a with-block."""

    def __init__(self, count):
        self.count, self.procs = count, []

    def __enter__(self):
        self.procs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(self.count)]
        time.sleep(0.5)  # let the scheduler see them before the job starts
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def one_run(args, job, path, run):
    """Epoch records of one run of `job` (a Mirror label with its train_cnn, or a Python peer)."""
    if path:
        return compare.run_mirror(argparse.Namespace(**{**vars(args), "train_cnn": path}), run, 1)
    return compare.run_python(args, run, job)


def main():
    args = parse_args()
    jobs = [(label, path) for label, path in args.mirror] + [(fw, None) for fw in args.frameworks.split(",") if fw]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"Machine: {os.cpu_count()} hardware threads, {cpu}, load {os.getloadavg()[0]:.2f} at the start")
    records = []
    for run in range(args.runs):
        for condition in ("idle", "busy"):
            with Spinners(args.busy if condition == "busy" else 0):
                for job, path in jobs:
                    epochs = [r for r in one_run(args, job, path, run) if "epoch" in r]
                    for r in epochs:
                        records.append(dict(job=job, condition=condition, run=run, epoch=r["epoch"], seconds=r["seconds"]))
                    print(f"run {run + 1}/{args.runs} {condition:<4} {job:<16} epochs "
                          + ", ".join(f"{r['seconds']:.2f}s" for r in epochs), flush=True)
    rows = []
    for job, _ in jobs:
        row = dict(job=job)
        for condition in ("idle", "busy"):
            secs = [r["seconds"] for r in records if r["job"] == job and r["condition"] == condition]
            row[condition] = dict(median=statistics.median(secs), min=min(secs), max=max(secs))
        row["busy_over_idle"] = row["busy"]["median"] / row["idle"]["median"]
        rows.append(row)
    print(f"\nReference job, {args.train_samples} samples, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"{args.threads} threads, {args.runs} runs; busy = {args.busy} spinning processes beside it. Epoch seconds: "
          "median (min-max).")
    print(f"{'job':<16} {'idle s':>22} {'busy s':>22} {'busy/idle':>10}")
    for r in rows:
        cell = lambda c: f"{c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f})"  # noqa: E731
        print(f"{r['job']:<16} {cell(r['idle']):>22} {cell(r['busy']):>22} {r['busy_over_idle']:>9.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    settings = {k: os.path.relpath(v, ROOT) if isinstance(v, str) and os.path.isabs(v) else v
                for k, v in vars(args).items() if k != "mirror"}
    settings["mirror"] = {label: os.path.relpath(path, ROOT) for label, path in args.mirror}
    with open(args.out, "w") as f:
        json.dump(dict(settings=settings, cpu=cpu, commit=compare.git_version(), summary=rows, records=records), f,
                  indent=1)
    print(f"\nAll records: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
