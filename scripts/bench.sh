#!/usr/bin/env bash
# Benchmarks in one run, so the figures can be compared as ratios:
#   - the single-thread sgemm roofline for the products a training step performs,
#   - single-process training throughput and its fraction of that roofline,
#   - allocations per training step (a preloaded malloc counter), CSV loading time,
#   - distributed throughput with 1 and 2 local workers at batch 128 and 512, with shared
#     memory (the default on one host) and through the socket only,
#   - a worker's peak memory,
#   - the machine's own scaling, to read "2 workers vs 1" against: two independent single
#     processes at once against one alone (no messages, no shared step), at batch 512, and
#     what the synchronous step adds to it: the slower worker's compute against the mean.
# Prints a table and writes every figure as JSON.
#
#   scripts/bench.sh [--epochs N] [--repeats R] [--json PATH] [--wire-precision fp32|fp16|bf16]
#
# Each distributed configuration runs R times (default 3), interleaved with the others, and
# the run with the median throughput is reported: this machine is shared and noisy. The
# ratio of 2 workers to 1 at batch 512 is also given repeat by repeat (each pair ran seconds
# apart), to show how far the noise moves it.
# Throughput is steady state, over the epochs after the first (as for the single process):
# the first also pays start-up (page faults, first calls into OpenBLAS, workers attaching
# shared memory while the first steps already run). Whole-run figures are in the JSON too.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=3
repeats=3
json=.build/bench/bench.json
precision=fp32
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) epochs=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        --wire-precision) precision=$2; shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

scripts/setup.sh
scripts/fetch-mnist.sh >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
swift build -c release --product bench >/dev/null
mkdir -p .build/bench "$(dirname "$json")"
gcc -O2 -shared -fPIC -o .build/bench/malloc-counter.so scripts/malloc-counter.c

echo "== single process (one thread) =="
LD_PRELOAD=$PWD/.build/bench/malloc-counter.so .build/release/bench --epochs "$epochs" --json .build/bench/single.json

echo
echo "== distributed, local workers over TCP loopback ($precision on the wire), $epochs epochs each =="
echo "   (-socket: --no-shared-memory, every value through the socket; each the median of $repeats runs)"
run() {  # name, coordinator arguments...
    local name=$1; shift
    .build/release/coordinator --quiet --epochs "$epochs" --summary ".build/bench/$name.json" "$@"
}
for repeat in $(seq "$repeats"); do
    for batch in 128 512; do
        run "local-b$batch-r$repeat" --local --batch-size "$batch"
        for workers in 1 2; do
            run "w$workers-b$batch-r$repeat" --spawn-workers "$workers" --batch-size "$batch" --bind "tcp://127.0.0.1:*" \
                --wire-precision "$precision"
            # The same through the socket only, as workers on other hosts would move the values.
            run "w$workers-b$batch-socket-r$repeat" --spawn-workers "$workers" --batch-size "$batch" \
                --bind "tcp://127.0.0.1:*" --wire-precision "$precision" --no-shared-memory
        done
    done
    # Two --local runs at once: what two cores give two processes that share nothing, beside
    # local-b512 of the same repeat.
    run "pair-a-b512-r$repeat" --local --batch-size 512 &
    run "pair-b-b512-r$repeat" --local --batch-size 512
    wait $!
done

# A worker's peak memory (maximum resident set) over a whole run, 784-128-10 at batch 512.
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
.build/release/coordinator --quiet --epochs 1 --batch-size 512 --workers 1 --bind "tcp://127.0.0.1:$port" &
coordinator=$!
python3 - "$port" > .build/bench/worker-memory.txt <<'PY'
import resource, subprocess, sys
subprocess.run([".build/release/worker", "--connect", f"tcp://127.0.0.1:{sys.argv[1]}", "--log-level", "warning"], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB
PY
wait $coordinator

python3 - "$json" "$precision" "$repeats" <<'PY'
import functools, json, sys
path, precision, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
def steady(run):
    """Samples per second over the epochs after the first (all of them if there is one)."""
    later = run["history"][1:] or run["history"]
    return sum(e["samples_per_second"] * e["train_seconds"] for e in later) / sum(e["train_seconds"] for e in later)
@functools.cache  # each configuration's files are read once
def runs(name):
    return [json.load(open(f".build/bench/{name}-r{r}.json")) for r in range(1, repeats + 1)]
def load(name):
    if name == "single":
        return json.load(open(".build/bench/single.json"))
    # The repeat with the median steady throughput.
    return sorted(runs(name), key=steady)[repeats // 2]
def whole(name):
    """The median whole-run throughput (start-up included) of a configuration's repeats."""
    return sorted(run["samples_per_second"] for run in runs(name))[repeats // 2]
single = load("single")
worker_kib = int(open(".build/bench/worker-memory.txt").read().split()[-1])
out = {"single_process": single, "wire_precision": precision, "repeats": repeats, "worker_peak_memory_mib": worker_kib / 1024, "distributed": {}}
print(f"{'run':<20}{'samples/s':>11}{'whole run':>11}{'vs local':>10}{'vs 1 worker':>13}   per step: compute / send / wait / receive / optimizer (ms)")
for batch in (128, 512):
    local = load(f"local-b{batch}")
    one = load(f"w1-b{batch}")
    for name in (f"local-b{batch}", f"w1-b{batch}", f"w2-b{batch}", f"w1-b{batch}-socket", f"w2-b{batch}-socket"):
        run = load(name)
        per_step = {key: seconds / run["steps"] * 1000 for key, seconds in run["timing"].items()}
        row = {
            "samples_per_second": steady(run),
            "whole_run_samples_per_second": whole(name),
            "vs_local": steady(run) / steady(local),
            "vs_one_worker": steady(run) / steady(one),
            "whole_run_vs_one_worker": whole(name) / whole(f"w1-b{batch}"),
            "test_accuracy": run["test_accuracy"],
            "ms_per_step": per_step,
        }
        out["distributed"][name] = row
        print(f"{name:<20}{row['samples_per_second']:>11.0f}{row['whole_run_samples_per_second']:>11.0f}{row['vs_local']:>10.2f}{row['vs_one_worker']:>13.2f}   "
              + " / ".join(f"{per_step[key + '_seconds']:.3f}" for key in ("compute", "send", "network_wait", "receive", "optimizer")))
print(f"\nworker peak memory (784-128-10, batch 512): {worker_kib / 1024:.1f} MiB")
d = out["distributed"]
# Each repeat runs 1 and 2 workers a few seconds apart: their ratio, repeat by repeat, shows
# how far the machine's noise moves the figure.
paired = sorted(steady(two) / steady(one) for one, two in zip(runs("w1-b512"), runs("w2-b512")))
d["w2-b512"]["paired_vs_one_worker"] = paired
print(f"2 workers vs 1 at batch 512, repeat by repeat: {', '.join(f'{r:.2f}' for r in paired)}")
# The machine's own scaling beside that ratio: two processes that share nothing against one.
own_scaling = sorted((steady(a) + steady(b)) / steady(alone)
                 for a, b, alone in zip(runs("pair-a-b512"), runs("pair-b-b512"), runs("local-b512")))
out["independent_pair_vs_one"] = {"batch_size": 512, "median": own_scaling[repeats // 2], "paired": own_scaling}
# What a synchronous step costs on a noisy machine: it waits for the slower worker.
two = load("w2-b512")
slowest = two["timing"]["compute_seconds"] / two["steps"] * 1000
each = [w["mean_compute_milliseconds"] for w in two["worker_stats"]]
d["w2-b512"]["slower_worker_vs_mean"] = slowest / (sum(each) / len(each))
print(f"2 workers at batch 512: the slower worker's compute per step {slowest:.3f} ms, each worker's mean "
      f"{' and '.join(f'{m:.3f}' for m in each)} ms: waiting for the slower costs {d['w2-b512']['slower_worker_vs_mean']:.2f}x")
print(f"2 independent --local processes at once vs 1 alone at batch 512 (the machine's own scaling): "
      f"{own_scaling[repeats // 2]:.2f}x (repeat by repeat: {', '.join(f'{r:.2f}' for r in own_scaling)})")
print(f"2 workers vs 1 at batch 512: {d['w2-b512']['vs_one_worker']:.2f}x (whole run, start-up included: "
      f"{d['w2-b512']['whole_run_vs_one_worker']:.2f}x; socket only: "
      f"{d['w2-b512-socket']['samples_per_second'] / d['w1-b512-socket']['samples_per_second']:.2f}x); "
      f"2 workers vs --local at batch 128: {d['w2-b128']['vs_local']:.2f}x")
json.dump(out, open(path, "w"), indent=2, sort_keys=True)
print(f"\nfigures written to {path}")
PY
