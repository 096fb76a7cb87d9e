#!/usr/bin/env python3
"""The tables and the JSON of scripts/netsim.sh, from the summaries and link counters its
runs left in its output folder (OUT/RATE-MODE-PRECISION-N.json and OUT/RATE-ddp-N.json, each with
.before.counters and .after.counters: "host tx_bytes rx_bytes" per line). Called by netsim.sh;
run it again by hand to re-read a folder (same arguments).
"""
import argparse
import json
import re
import sys


def bits(rate):
    match = re.fullmatch(r"([0-9.]+)([kmg]?)bit", rate)
    if not match:
        sys.exit(f"netsim_report.py: cannot read the rate '{rate}' (e.g. 1gbit)")
    return float(match[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match[2]]


def value_bytes(precision):
    return 2 if precision in ("fp16", "bf16") else 4


def read_counters(path):
    counters = {}
    with open(path) as file:
        for line in file:
            host, tx, rx = line.split()
            counters[host] = (int(tx), int(rx))
    return counters


def link_bytes(out, name, steps, parameters, precision):
    """Bytes per step that each host's link carried (its tx and rx) and the busiest link:
    the one with the most bytes both ways added, with its busier direction."""
    before, after = read_counters(f"{out}/{name}.before.counters"), read_counters(f"{out}/{name}.after.counters")
    per_host = {host: {"tx": (after[host][0] - before[host][0]) / steps, "rx": (after[host][1] - before[host][1]) / steps}
                for host in after}
    host = max(per_host, key=lambda h: per_host[h]["tx"] + per_host[h]["rx"])  # the first when none carried any
    both, busier = per_host[host]["tx"] + per_host[host]["rx"], max(per_host[host].values())
    unit = parameters * value_bytes(precision)
    return per_host, {"host": host, "both_ways": both, "busier_way": busier, "pv": unit,
                      "both_ways_over_pv": both / unit, "busier_way_over_pv": busier / unit}


def arguments():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--rates", required=True)
    parser.add_argument("--precisions", required=True)
    parser.add_argument("--modes", default="coordinator")
    parser.add_argument("--workers", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--batch-size-per-worker", type=int, default=0, help="0: strong scaling")
    parser.add_argument("--ddp", type=int, default=1)
    parser.add_argument("--burst", type=int, default=0, help="tc tbf's bucket in bytes (0: netsim.sh's default)")
    parser.add_argument("--host-cpus", type=float, default=0, help="each worker host's share of a CPU (0: no quota, the machine's cores shared)")
    parser.add_argument("--host-cpu-period", type=int, default=10000, help="the quota's period in microseconds")
    return parser.parse_args()


def main():
    args = arguments()
    out, weak = args.out, args.batch_size_per_worker > 0
    rates, precisions, modes = args.rates.split(), args.precisions.split(), args.modes.split()
    counts = sorted(int(n) for n in args.workers.split())
    local = json.load(open(f"{out}/local.json"))
    parameters = local["parameters"]
    compute_per_sample = local["timing"]["compute_seconds"] / local["steps"] / local["batch_size"]  # one core

    def global_batch(n):
        return args.batch_size_per_worker * n if weak else args.batch_size

    def model(n, rate, precision, mode, fixed):
        # Per step, one after the other: the weights go out, the workers compute the batch
        # (split over n; 2 cores here, so at most 2 at a time), the gradients come back, and a
        # fixed cost per step. The next step's samples go down while the workers compute,
        # hidden behind it. What the busiest link carries each way decides the wire: the
        # coordinator's n copies of the weights down and n gradients up; with the parameter
        # service every host sends the other n-1 servers their ranges of its gradient, then each
        # server sends the other n-1 hosts its range of the weights: (n-1)/n·P·v each phase.
        # The fixed cost: about 0.3 ms for the coordinator's round trip; for the parameter
        # service, what its smallest run (normally n = 1, no wire at all) took beyond its
        # compute: the hops through loopback, the receipts and the step plans.
        unit = parameters * value_bytes(precision) * 8 / bits(rate)
        wire = 2 * (n - 1) / n * unit if mode.startswith("service") else 2 * n * unit
        # The service's fixed cost is work of the hosts' CPUs, shared by them like the compute;
        # with --host-cpus every host does its own share on its own CPU share, as measured.
        share = 1 if args.host_cpus or not mode.startswith("service") else min(n, 2)
        return global_batch(n) / (compute_seconds(global_batch(n), n) + wire + fixed / share)

    def compute_seconds(batch, n):
        # The batch split over n hosts: with --host-cpus each has that share of a core; without,
        # they share this machine's 2 cores.
        if args.host_cpus:
            return compute_per_sample * batch / (n * args.host_cpus)
        return compute_per_sample * batch / min(n, 2)

    def fixed_cost(rate, mode, precision):
        if not mode.startswith("service"):
            return 0.3e-3
        n = counts[0]
        first = json.load(open(f"{out}/{rate}-{mode}-{precision}-{n}.json"))
        unit = parameters * value_bytes(precision) * 8 / bits(rate)
        step = first["batch_size"] / first["samples_per_second"]
        return max(0.0, step - compute_seconds(global_batch(n), n) - 2 * (n - 1) / n * unit)

    def expected_busier_way(n, precision, mode, batch, pixel_share):
        # Down the coordinator's link: the pixels (a byte each) of the shards of workers that do
        # not hold the data (`--worker-data`: indices only), beside the weights it carries.
        pixels = batch * 784 * pixel_share
        if mode.startswith("service"):
            return max(2 * (n - 1) / n * parameters * value_bytes(precision), pixels)
        return n * parameters * value_bytes(precision) + pixels

    runs, comparisons = [], []
    for rate in rates:
        for n in counts:
            ddp = json.load(open(f"{out}/{rate}-ddp-{n}.json")) if args.ddp else None
            for mode in modes:
                for precision in precisions:
                    name = f"{rate}-{mode}-{precision}-{n}"
                    run = json.load(open(f"{out}/{name}.json"))
                    predicted = model(n, rate, precision, mode, fixed_cost(rate, mode, precision))
                    per_host, busiest = link_bytes(out, name, run["steps"], parameters, precision)
                    stats = run.get("worker_stats") or []
                    pixel_share = sum(w.get("data") == "pixels" for w in stats) / len(stats) if stats else 1
                    busiest["expected_busier_way"] = expected_busier_way(n, precision, mode, run["batch_size"], pixel_share)
                    runs.append(dict(system="zmq-trainer", mode=mode, link=rate, precision=precision, workers=n,
                                     batch_size=run["batch_size"], samples_per_second=run["samples_per_second"],
                                     predicted=predicted, measured_over_predicted=run["samples_per_second"] / predicted,
                                     test_accuracy=run["test_accuracy"], train_loss=run["train_loss"], timing=run["timing"],
                                     steps=run["steps"], bytes_per_step=per_host, busiest_link=busiest))
                    if ddp:
                        comparisons.append(dict(link=rate, mode=mode, precision=precision, workers=n,
                                                zmq_trainer=run["samples_per_second"], pytorch_ddp=ddp["samples_per_second"],
                                                ratio=run["samples_per_second"] / ddp["samples_per_second"]))
            if ddp:
                if ddp["parameters"] != parameters:
                    print(f"warning: DDP's network has {ddp['parameters']} parameters, the project's {parameters}")
                per_host, busiest = link_bytes(out, f"{rate}-ddp-{n}", ddp["steps"], ddp["parameters"], "fp32")
                # A ring all-reduce: each host sends (and receives) 2(n-1)/n of the gradient.
                busiest["expected_busier_way"] = 2 * (n - 1) / n * ddp["parameters"] * 4
                runs.append(dict(system="pytorch-ddp", mode="all-reduce", link=rate, precision="fp32", workers=n, batch_size=ddp["batch_size"],
                                 samples_per_second=ddp["samples_per_second"], steps=ddp["steps"], torch=ddp["torch"],
                                 first_loss=ddp["first_loss"], last_loss=ddp["last_loss"],
                                 bytes_per_step=per_host, busiest_link=busiest))

    # Efficiency against the smallest N of the same system, link and precision.
    for run in runs:
        first = next(r for r in runs if r["workers"] == counts[0] and
                     all(r[k] == run[k] for k in ("system", "mode", "link", "precision")))
        run["efficiency"] = run["samples_per_second"] / (run["workers"] / counts[0] * first["samples_per_second"])

    def find(system, mode, rate, precision, n):
        return next(r for r in runs
                    if (r["system"], r["mode"], r["link"], r["precision"], r["workers"]) == (system, mode, rate, precision, n))

    scaling = f"weak scaling, {args.batch_size_per_worker} samples per worker" if weak else f"strong scaling, batch {args.batch_size}"
    cpus = f"; each worker host {args.host_cpus:g} of a CPU (cgroup quota over {args.host_cpu_period} us)" if args.host_cpus else ""
    print(f"\n{local['model']}, {parameters} parameters, {scaling}; efficiency against {counts[0]} worker(s){cpus}")
    print(f"{'link':<8}{'mode':<18}{'wire':<6}{'workers':>8}{'batch':>7}{'samples/s':>11}{'model':>9}{'ratio':>7}{'effic.':>8}"
          + (f"{'DDP fp32':>10}{'effic.':>8}{'x DDP':>7}" if args.ddp else ""))
    for rate in rates:
        for n in counts:
            for mode, precision in ((m, p) for m in modes for p in precisions):
                run = find("zmq-trainer", mode, rate, precision, n)
                line = (f"{rate:<8}{mode:<18}{precision:<6}{n:>8}{run['batch_size']:>7}{run['samples_per_second']:>11.0f}"
                        f"{run['predicted']:>9.0f}{run['measured_over_predicted']:>7.2f}{100 * run['efficiency']:>7.0f}%")
                if args.ddp:
                    ddp = find("pytorch-ddp", "all-reduce", rate, "fp32", n)
                    line += (f"{ddp['samples_per_second']:>10.0f}{100 * ddp['efficiency']:>7.0f}%"
                             f"{run['samples_per_second'] / ddp['samples_per_second']:>7.2f}")
                print(line)

    print("\nbytes per step on the busiest link (the host whose link carried most, both ways added), in units of"
          " P·v (v: bytes per value on the wire), beside the reference 2·P·v; 'expected' is the busier way's design"
          " figure: the coordinator's n·P·v + pixels down (for workers without the data), the parameter service's"
          " 2(n-1)/n·P·v per host (or the coordinator's pixels if more), DDP's ring 2(n-1)/n·P·v")
    print(f"{'link':<8}{'system':<13}{'mode':<18}{'wire':<6}{'workers':>8}{'busiest':>9}{'MB/step':>9}{'both ways':>11}"
          f"{'busier way':>12}{'expected':>10}")
    for run in runs:
        busiest = run["busiest_link"]
        print(f"{run['link']:<8}{run['system']:<13}{run['mode']:<18}{run['precision']:<6}{run['workers']:>8}{busiest['host']:>9}"
              f"{busiest['both_ways'] / 1e6:>9.2f}{busiest['both_ways_over_pv']:>10.2f}x{busiest['busier_way_over_pv']:>11.2f}x"
              f"{busiest['expected_busier_way'] / busiest['pv']:>9.2f}x")
    if args.ddp:
        print("\nlosses (first step -> last), to see both train:")
        for run in runs:
            if run["system"] == "pytorch-ddp":
                print(f"  {run['link']} DDP {run['workers']} worker(s): {run['first_loss']:.3f} -> {run['last_loss']:.3f}")
            else:
                print(f"  {run['link']} zmq-trainer {run['mode']} {run['precision']} {run['workers']} worker(s): last train loss "
                      f"{run['train_loss']:.3f}, test accuracy {100 * run['test_accuracy']:.2f}%")
    result = dict(model=local["model"], parameters=parameters, scaling="weak" if weak else "strong",
                  batch_size=None if weak else args.batch_size,
                  batch_size_per_worker=args.batch_size_per_worker if weak else None,
                  tbf_burst_bytes=args.burst or "default", host_cpus=args.host_cpus or None, host_cpu_period_us=args.host_cpu_period if args.host_cpus else None, compute_seconds_per_sample_one_core=compute_per_sample, runs=runs, comparisons=comparisons)
    with open(args.json, "w") as file:
        json.dump(result, file, indent=2)
    print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
