#!/usr/bin/env python3
"""Plots for zmq-trainer runs.

  scripts/plot.py curves METRICS.jsonl [-o curves.png]   training curves from --metrics
  scripts/plot.py scaling SCALE.json [-o scaling.png]    speedup/efficiency from scripts/scale.sh

Needs matplotlib (installed with pip when missing).
"""
import argparse
import json
import subprocess
import sys


def matplotlib_pyplot():
    try:
        import matplotlib
    except ImportError:
        print("installing matplotlib with pip ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(path):
    epochs, steps = [], []
    with open(path) as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                sys.exit(f"{path}:{number}: not a JSON object: {error}")
            (epochs if record.get("kind") == "epoch" else steps).append(record)
    if not epochs:
        sys.exit(f"{path}: no epoch lines (was it written with --metrics?)")
    return epochs, steps


def curves(args):
    plt = matplotlib_pyplot()
    epochs, steps = read_metrics(args.metrics)
    steps_per_epoch = epochs[0]["step"] / max(epochs[0]["epoch"], 1)
    x = [e["epoch"] for e in epochs]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    if steps:
        loss_axis.plot([s["step"] / steps_per_epoch for s in steps], [s["loss"] for s in steps],
                       color="#9ab", linewidth=1, label="train (per steps)")
    loss_axis.plot(x, [e["loss"] for e in epochs], "o-", label="train (epoch)")
    if "test_loss" in epochs[0]:
        loss_axis.plot(x, [e["test_loss"] for e in epochs], "s-", label="test")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss", yscale="log")
    loss_axis.legend()
    accuracy_axis.plot(x, [100 * e["accuracy"] for e in epochs], "o-", label="train")
    if "test_accuracy" in epochs[0]:
        accuracy_axis.plot(x, [100 * e["test_accuracy"] for e in epochs], "s-", label="test")
        best = max(epochs, key=lambda e: e["test_accuracy"])
        accuracy_axis.annotate(f"best {100 * best['test_accuracy']:.2f}%", (best["epoch"], 100 * best["test_accuracy"]),
                               textcoords="offset points", xytext=(-30, -18))
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.legend()
    figure.suptitle(args.title or "training curves")
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


def scaling(args):
    plt = matplotlib_pyplot()
    with open(args.scale) as source:
        result = json.load(source)
    runs = result["runs"]
    workers = [r["workers"] for r in runs]
    figure, (speed_axis, split_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    speedups = [r["speedup"] for r in runs]
    if all("speedup_range" in r for r in runs):  # scale.sh --repeats: median run, bars span all
        low = [s - r["speedup_range"][0] for s, r in zip(speedups, runs)]
        high = [r["speedup_range"][1] - s for s, r in zip(speedups, runs)]
        speed_axis.errorbar(workers, speedups, yerr=[low, high], fmt="o-", capsize=4,
                            label=f"measured speedup (median of {result.get('repeats', '?')} runs, bars: range)")
    else:
        speed_axis.plot(workers, speedups, "o-", label="measured speedup")
    speed_axis.plot(workers, workers, "--", color="gray", label="linear")
    for r in runs:
        speed_axis.annotate(f"{100 * r['efficiency']:.0f}%", (r["workers"], r["speedup"]),
                            textcoords="offset points", xytext=(5, -12))
    speed_axis.set(xlabel="workers", ylabel="speedup over 1 worker",
                   title=f"throughput, batch {result['batch_size']} (labels: efficiency)")
    speed_axis.set_xticks(workers)
    speed_axis.legend(loc="best", fontsize="small")
    compute = [r["compute_ms"] for r in runs]
    communication = [r["communication_ms"] for r in runs]
    split_axis.bar(workers, compute, label="compute")
    split_axis.bar(workers, communication, bottom=compute, label="communication")
    split_axis.set(xlabel="workers", ylabel="ms per step", title="where a step's time goes")
    split_axis.set_xticks(workers)
    split_axis.legend()
    # scale.sh's JSON names the network (an MLP's and a convnet's scale differently).
    if args.title or "model" in result:
        figure.suptitle(args.title or result["model"])
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    curve_parser = commands.add_parser("curves", help="loss and accuracy per epoch from a --metrics file")
    curve_parser.add_argument("metrics")
    curve_parser.add_argument("-o", "--output", default="curves.png")
    curve_parser.add_argument("--title")
    scale_parser = commands.add_parser("scaling", help="speedup and efficiency from scripts/scale.sh's JSON")
    scale_parser.add_argument("scale")
    scale_parser.add_argument("-o", "--output", default="scaling.png")
    scale_parser.add_argument("--title")
    args = parser.parse_args()
    curves(args) if args.command == "curves" else scaling(args)


if __name__ == "__main__":
    main()
