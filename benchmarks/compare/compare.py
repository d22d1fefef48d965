"""Runs the reference job with Mirror (train_cnn), Keras on TensorFlow-CPU and PyTorch-CPU on this
machine, several runs each, interleaved (run 1 of every framework, then run 2, ...) so that a
change in the machine's load hits all of them alike, and prints the comparison table.

Standard library only; run.sh calls it with the virtual environment's python for the Python jobs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# Every configuration the table can hold: Mirror's two host layouts, and each peer's default and its
# fastest configuration a user could pick.
FRAMEWORKS = {
    "mirror": "1 replica x all threads",
    "mirror-2x1": "2 replicas x 1 thread",
    "keras": "Keras's defaults",
    "keras-xla": "jit_compile=True",
    "pytorch": "eager",
    "pytorch-compile": "torch.compile",
    "pytorch-compile-cl": "torch.compile + channels-last",
}
PYTHON_JOBS = {"keras": ("keras", "default"), "keras-xla": ("keras", "xla"), "pytorch": ("torch", "eager"),
               "pytorch-compile": ("torch", "compile"), "pytorch-compile-cl": ("torch", "compile-channels-last")}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data", default=os.environ.get("MIRROR_DATA_DIR") or "/usr/share/datasets/fashion-mnist")
    p.add_argument("--train-samples", type=int, default=0, help="train on the first N samples only (0 = all; for a quick try)")
    p.add_argument("--train-cnn", default=os.path.join(ROOT, "build", "examples", "train_cnn"))
    p.add_argument("--python", default=sys.executable, help="the interpreter with TensorFlow and PyTorch")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of " + ", ".join(f"{k} ({v})" for k, v in FRAMEWORKS.items()))
    p.add_argument("--out", default=os.path.join(ROOT, "build-compare", "results.json"),
                   help="where every record and the summary are written as JSON")
    return p.parse_args()


def git_version():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        return f"mirror 0.1.0 ({rev})"
    except (OSError, subprocess.CalledProcessError):
        return "mirror 0.1.0"


def run_checked(cmd, env=None):
    """Runs cmd and returns its stdout; its stderr (start-up chatter) is shown only if it fails."""
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(f"failed with exit status {done.returncode}: {' '.join(cmd)}")
    return done.stdout


def run_mirror(args, run, replicas):
    """train_cnn on the host strategy; its --metrics-json gives the epochs and the test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "metrics.json")
        cmd = [args.train_cnn, "--strategy", "host", "--replicas", str(replicas), "--threads", str(args.threads),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--data", args.data,
               "--seed", str(42 + run), "--verbose", "0", "--metrics-json", metrics,
               "--train-samples", str(args.train_samples)]
        run_checked(cmd)
        with open(metrics) as f:
            m = json.load(f)
    label = f"{git_version()}, host {replicas}x{max(1, args.threads // replicas)} thread(s)"
    records = [dict(framework="mirror", version=label, run=run, epoch=e["epoch"], seconds=e["seconds"],
                    samples=e["samples_per_second"] * e["seconds"], loss=e["loss"], accuracy=e["accuracy"])
               for e in m["epochs"]]
    records.append(dict(framework="mirror", run=run, test_loss=m["test"]["loss"], test_accuracy=m["test"]["accuracy"]))
    return records


def run_python(args, run, framework):
    job, variant = PYTHON_JOBS[framework]
    script = os.path.join(HERE, f"train_{job}.py")
    cmd = [args.python, script, "--variant", variant, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--threads",
           str(args.threads), "--data", args.data, "--seed", str(42 + run), "--run", str(run),
           "--train-samples", str(args.train_samples)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = run_checked(cmd, env)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def summarise(records, frameworks):
    rows = []
    for fw in frameworks:
        all_epochs = [r for r in records if r["framework"] == fw and "epoch" in r]
        tests = [r["test_accuracy"] for r in records if r["framework"] == fw and "test_accuracy" in r]
        if not all_epochs:
            continue
        # The steady state: the first epoch includes XLA's and torch.compile's compilation (and
        # every framework's warm-up), so it is left out when there are later ones.
        epochs = [r for r in all_epochs if r["epoch"] > 1] or all_epochs
        seconds = statistics.median(r["seconds"] for r in epochs)
        samples = statistics.median(r["samples"] for r in epochs)
        rows.append(dict(framework=fw, version=epochs[0]["version"], epoch_seconds_median=seconds,
                         epoch_seconds_min=min(r["seconds"] for r in epochs),
                         epoch_seconds_max=max(r["seconds"] for r in epochs),
                         first_epoch_seconds_median=statistics.median(r["seconds"] for r in all_epochs if r["epoch"] == 1),
                         samples_per_second=samples / seconds, test_accuracy_median=statistics.median(tests),
                         test_accuracy_runs=tests, epochs_measured=len(epochs)))
    base = next((r for r in rows if r["framework"] == "mirror"), rows[0] if rows else None)
    for r in rows:
        r["samples_per_second_vs_mirror"] = r["samples_per_second"] / base["samples_per_second"]
    return rows


def print_table(rows, args):
    print(f"\nReference job: Fashion-MNIST, batch {args.batch_size}, {args.epochs} epoch(s), {args.threads} thread(s), "
          f"{args.runs} run(s) each; epoch seconds are the median over every epoch but the first (which includes "
          f"compilation and warm-up; 'first s') of every run.")
    header = (f"{'framework':<16} {'version':<58} {'epoch s':>8} {'first s':>8} {'samples/s':>10} {'test acc':>9} "
              f"{'vs Mirror':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['framework']:<16} {r['version']:<58} {r['epoch_seconds_median']:>8.2f} "
              f"{r['first_epoch_seconds_median']:>8.2f} "
              f"{r['samples_per_second']:>10.0f} {r['test_accuracy_median']:>9.4f} "
              f"{r['samples_per_second_vs_mirror']:>9.3f}x")
    mirror = next((r for r in rows if r["framework"] == "mirror"), None)
    if mirror:
        for r in rows:
            if r is not mirror and not r["framework"].startswith("mirror"):
                print(f"Mirror runs {mirror['samples_per_second'] / r['samples_per_second']:.1f}x the samples/s of "
                      f"{r['framework']}; test accuracy {100 * (mirror['test_accuracy_median'] - r['test_accuracy_median']):+.2f} points.")
        peers = [r for r in rows if not r["framework"].startswith("mirror")]
        best_mirror = max((r for r in rows if r["framework"].startswith("mirror")), key=lambda r: r["samples_per_second"])
        for name in ("keras", "pytorch"):
            family = [r for r in peers if r["framework"].split("-")[0] == name]
            if family:
                best = max(family, key=lambda r: r["samples_per_second"])
                print(f"Best {name} configuration: {best['framework']}; Mirror's best ({best_mirror['framework']}) runs "
                      f"{best_mirror['samples_per_second'] / best['samples_per_second']:.1f}x its samples/s.")


def main():
    args = parse_args()
    frameworks = [f for f in args.frameworks.split(",") if f]
    records = []
    for run in range(args.runs):
        for fw in frameworks:
            start = time.perf_counter()
            if fw == "mirror":
                got = run_mirror(args, run, 1)
            elif fw == "mirror-2x1":
                got = run_mirror(args, run, 2)
            elif fw in PYTHON_JOBS:
                got = run_python(args, run, fw)
            else:
                sys.exit(f"unknown framework {fw!r}")
            for r in got:
                r["framework"] = fw
            records += got
            epochs = [r for r in got if "epoch" in r]
            print(f"run {run + 1}/{args.runs} {fw:<11} epochs "
                  + ", ".join(f"{r['seconds']:.2f}s" for r in epochs)
                  + f"  test accuracy {next(r['test_accuracy'] for r in got if 'test_accuracy' in r):.4f}"
                  + f"  ({time.perf_counter() - start:.0f}s with start-up)", flush=True)
    rows = summarise(records, frameworks)
    print_table(rows, args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Paths are recorded relative to the repository, so a saved result names no machine's folders.
    settings = {k: os.path.relpath(v, ROOT) if isinstance(v, str) and os.path.isabs(v) else v
                for k, v in vars(args).items()}
    with open(args.out, "w") as f:
        json.dump(dict(settings=settings, summary=rows, records=records), f, indent=1)
    print(f"\nAll records: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
