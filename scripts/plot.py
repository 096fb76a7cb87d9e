#!/usr/bin/env python3
"""Plots for zmq-trainer runs.

  scripts/plot.py curves METRICS.jsonl [-o curves.png]   training curves from --metrics
  scripts/plot.py scaling SCALE.json [-o scaling.png]    speedup/efficiency from scripts/scale.sh
  scripts/plot.py netsim NETSIM.json [-o netsim.png]     scripts/netsim.sh: the project beside PyTorch DDP

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
    if result.get("scaling") == "weak":
        batch = f"weak, {result['batch_size_per_worker']} per worker"
    else:
        batch = f"batch {result['batch_size']}"
    speed_axis.set(xlabel="workers", ylabel="speedup over 1 worker", title=f"throughput, {batch} (labels: efficiency)")
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


def netsim(args):
    """Per link rate, one row: samples/s against workers for each system and wire precision,
    and the busiest link's bytes per step in units of P·v beside 2·P·v."""
    plt = matplotlib_pyplot()
    with open(args.netsim) as source:
        result = json.load(source)
    runs = result["runs"]
    links = list(dict.fromkeys(r["link"] for r in runs))
    series = list(dict.fromkeys((r["system"], r.get("mode", ""), r["precision"]) for r in runs))
    figure, axes = plt.subplots(len(links), 2, figsize=(11, 4 * len(links)), dpi=80, squeeze=False)
    if result["scaling"] == "weak":
        batch = f"{result['batch_size_per_worker']} samples per worker (weak scaling)"
    else:
        batch = f"batch {result['batch_size']}"
    for (speed_axis, bytes_axis), link in zip(axes, links):
        for system, mode, precision in series:
            chosen = sorted((r for r in runs
                             if (r["link"], r["system"], r.get("mode", ""), r["precision"]) == (link, system, mode, precision)),
                            key=lambda r: r["workers"])
            if not chosen:
                continue
            label = f"PyTorch DDP {precision}" if system == "pytorch-ddp" else f"zmq-trainer {mode} {precision}"
            style = "s--" if system == "pytorch-ddp" else "o-"
            workers = [r["workers"] for r in chosen]
            (line,) = speed_axis.plot(workers, [r["samples_per_second"] for r in chosen], style, label=label)
            if result["scaling"] == "weak":
                for r in chosen:
                    speed_axis.annotate(f"{100 * r['efficiency']:.0f}%", (r["workers"], r["samples_per_second"]),
                                        textcoords="offset points", xytext=(5, -12), fontsize="small")
            bytes_axis.plot(workers, [r["busiest_link"]["both_ways_over_pv"] for r in chosen], style,
                            color=line.get_color(), label=f"{label}, both ways")
            bytes_axis.plot(workers, [r["busiest_link"]["busier_way_over_pv"] for r in chosen], style,
                            color=line.get_color(), alpha=0.4, label=f"{label}, busier way")
        speed_axis.set(xlabel="workers (one per simulated host)", ylabel="samples/s",
                       title=f"{link} links, {batch}" + (" (labels: efficiency)" if result["scaling"] == "weak" else ""))
        speed_axis.set_ylim(bottom=0)
        speed_axis.legend(fontsize="small")
        bytes_axis.axhline(2, color="gray", linestyle=":", label="2·P·v")
        bytes_axis.set(xlabel="workers", ylabel="bytes per step / (P·v)", title=f"{link}: the busiest link's bytes per step")
        bytes_axis.set_ylim(bottom=0)
        bytes_axis.legend(fontsize="x-small")
        for axis in (speed_axis, bytes_axis):
            axis.set_xticks(sorted({r["workers"] for r in runs}))
    figure.suptitle(f"{result['model']} ({result['parameters']} parameters) on a simulated cluster")
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
    netsim_parser = commands.add_parser("netsim", help="the project beside PyTorch DDP from scripts/netsim.sh's JSON")
    netsim_parser.add_argument("netsim")
    netsim_parser.add_argument("-o", "--output", default="netsim.png")
    args = parser.parse_args()
    {"curves": curves, "scaling": scaling, "netsim": netsim}[args.command](args)


if __name__ == "__main__":
    main()
