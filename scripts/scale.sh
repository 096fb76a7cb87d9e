#!/usr/bin/env bash
# Scaling experiment: the same training with N = 1, 2, ... local workers, then a table of
# throughput, speedup, efficiency and where each step's time goes.
#
#   scripts/scale.sh [--max-workers N] [--batch-size B | --batch-size-per-worker B] [--epochs E]
#                    [--repeats R] [--json PATH] [-- coordinator args]
#
# Strong scaling by default: the same global batch for every N. --batch-size-per-worker B is
# weak scaling: the global batch is B times N (the coordinator's own --batch-size-per-worker;
# the --local row trains at B), so each worker's share of a step stays the same, and the
# efficiency throughput(N) / (N · throughput(1)) is 100% when the communication costs nothing
# and every worker has a core of its own.
# Epochs stay epochs: with a larger batch an epoch has fewer, larger steps.
# Defaults: workers 1..nproc, batch 512, 2 epochs, 3 repeats, JSON in .build/scale/scale.json
# (scripts/plot.py draws it). Each N runs R times, interleaved with the others, and the run
# with the median throughput is reported (with the range of the speedups): on a shared
# machine single runs vary by 10% and more.
set -euo pipefail
cd "$(dirname "$0")/.."

max_workers=$(nproc)
batch=512
per_worker=""
epochs=2
repeats=3
json=.build/scale/scale.json
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --max-workers) max_workers=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --batch-size-per-worker) per_worker=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "scale.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

scripts/setup.sh
scripts/fetch-mnist.sh >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
mkdir -p .build/scale "$(dirname "$json")"
batch_options=(--batch-size "$batch")
[ -z "$per_worker" ] || batch_options=(--batch-size-per-worker "$per_worker")

for repeat in $(seq "$repeats"); do
    .build/release/coordinator --quiet --local "${batch_options[@]}" --epochs "$epochs" \
        --summary ".build/scale/local-r$repeat.json" "${extra[@]}"
    for n in $(seq 1 "$max_workers"); do
        .build/release/coordinator --quiet --spawn-workers "$n" "${batch_options[@]}" --epochs "$epochs" \
            --bind "tcp://127.0.0.1:*" --summary ".build/scale/n$n-r$repeat.json" "${extra[@]}"
    done
done

python3 - "$json" "$max_workers" "$batch" "$repeats" "${per_worker:-0}" <<'PY'
import json, sys
path, max_workers, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per_worker = int(sys.argv[5])  # 0: strong scaling
def repeats_of(name):
    return [json.load(open(f".build/scale/{name}-r{r}.json")) for r in range(1, repeats + 1)]
def median_run(runs):
    return sorted(runs, key=lambda run: run["samples_per_second"])[len(runs) // 2]
local = median_run(repeats_of("local"))
all_runs = [repeats_of(f"n{n}") for n in range(1, max_workers + 1)]
runs = [median_run(each) for each in all_runs]
base = runs[0]["samples_per_second"]
scaling = f"weak scaling, {per_worker} samples per worker" if per_worker else f"batch {batch}"
print(f"{local['model']}, {scaling}; single process (--local): {local['samples_per_second']:.0f} samples/s; each row the median of {repeats} runs")
print(f"{'workers':>7} {'batch':>7} {'samples/s':>11} {'speedup':>8} {'(range)':>11} {'efficiency':>10} {'compute ms':>11} {'comm ms':>8} {'comm %':>7} {'test acc':>9}")
rows = []
for n, run in enumerate(runs, start=1):
    # The range pairs each repeat with the 1-worker run of the same repeat.
    speedups = [each["samples_per_second"] / one["samples_per_second"] for each, one in zip(all_runs[n - 1], all_runs[0])]
    t, steps = run["timing"], run["steps"]
    compute = t["compute_seconds"] / steps * 1000
    comm = (t["send_seconds"] + t["network_wait_seconds"] + t["receive_seconds"]) / steps * 1000
    speedup = run["samples_per_second"] / base
    row = dict(workers=n, batch_size=run["batch_size"], samples_per_second=run["samples_per_second"], speedup=speedup,
               speedup_range=[min(speedups), max(speedups)],
               efficiency=speedup / n, compute_ms=compute, communication_ms=comm,
               test_accuracy=run["test_accuracy"], weights_sha256=run["weights_sha256"])
    rows.append(row)
    print(f"{n:>7} {run['batch_size']:>7} {row['samples_per_second']:>11.0f} {speedup:>8.2f} {min(speedups):>5.2f}-{max(speedups):<5.2f} {speedup / n:>10.2f} {compute:>11.3f} "
          f"{comm:>8.3f} {100 * comm / (compute + comm):>6.0f}% {100 * run['test_accuracy']:>8.2f}%")
json.dump(dict(model=local["model"], parameters=local["parameters"], scaling="weak" if per_worker else "strong",
               batch_size=None if per_worker else batch, batch_size_per_worker=per_worker or None, repeats=repeats,
               local_samples_per_second=local["samples_per_second"], runs=rows),
          open(path, "w"), indent=2)
print(f"figures written to {path}")
PY
