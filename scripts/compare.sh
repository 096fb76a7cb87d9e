#!/usr/bin/env bash
# Two builds side by side: each round runs each build's coordinator with 1 and then 2
# spawned workers, so that a shared machine's drift falls on both builds alike. Prints each
# round's figures, then per build the median throughputs, the median 2-vs-1 ratio and the median time
# per 2-worker step outside the slower worker's compute, and how often, and by how much,
# build B's 2 workers beat build A's in the same round.
#
#   scripts/compare.sh DIR_A DIR_B [--rounds N] [--epochs E] [--batch-size B] [-- coordinator args]
#
# DIR_A and DIR_B each hold a `coordinator` and a `worker` executable (a release build's
# .build/release, or a copy of one kept aside). Defaults: 10 rounds, 3 epochs, batch 512.
# Throughput is steady state (the epochs after the first), as in bench.sh. Every run with a
# given number of workers must end with the same weights (one shard per worker), or the
# script says which did not and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=10
epochs=3
batch=512
builds=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        -*) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
        *) builds+=("$1"); shift ;;
    esac
done
if [ ${#builds[@]} -ne 2 ]; then
    echo "compare.sh: give two build folders (see --help)" >&2
    exit 2
fi
for build in "${builds[@]}"; do
    for program in coordinator worker; do
        [ -x "$build/$program" ] || { echo "compare.sh: no $program executable in $build" >&2; exit 2; }
    done
done

scripts/fetch-mnist.sh >/dev/null
out=.build/compare
rm -rf "$out"
mkdir -p "$out"
for round in $(seq "$rounds"); do
    for side in 0 1; do
        for workers in 1 2; do
            "${builds[$side]}/coordinator" --quiet --epochs "$epochs" --batch-size "$batch" --spawn-workers "$workers" \
                --bind "tcp://127.0.0.1:*" --summary "$out/r$round-b$side-w$workers.json" "${extra[@]}"
        done
    done
    echo "round $round of $rounds done"
done

python3 - "$out" "$rounds" "${builds[@]}" <<'PY'
import json, statistics, sys
out, rounds, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def steady(run):
    later = run["history"][1:] or run["history"]
    return sum(e["samples_per_second"] * e["train_seconds"] for e in later) / sum(e["train_seconds"] for e in later)
runs = {(r, side, w): json.load(open(f"{out}/r{r}-b{side}-w{w}.json"))
        for r in range(1, rounds + 1) for side in (0, 1) for w in (1, 2)}
reference = {w: runs[(1, 0, w)]["weights_sha256"] for w in (1, 2)}
differ = [key for key, run in runs.items() if run["weights_sha256"] != reference[key[2]]]
rows, summaries = [], []
for side, build in enumerate(builds):
    one = [steady(runs[(r, side, 1)]) for r in range(1, rounds + 1)]
    two = [steady(runs[(r, side, 2)]) for r in range(1, rounds + 1)]
    ratios = [b / a for a, b in zip(one, two)]
    rows.append((one, two, ratios))
    # A 2-worker step's time beyond the slower worker's compute, per step, in ms.
    outside = [(runs[(r, side, 2)]["batch_size"] / t - runs[(r, side, 2)]["compute_seconds"] / runs[(r, side, 2)]["steps"]) * 1000
               for r, t in zip(range(1, rounds + 1), two)]
    summaries.append(f"{'AB'[side]} = {build}: 1 worker {statistics.median(one):.0f}, 2 workers {statistics.median(two):.0f} samples/s; "
                     f"2 vs 1 {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
                     f"2-worker step outside the compute {statistics.median(outside):.3f} ms")
for r in range(rounds):
    print(f"round {r + 1:>3}   " + "   ".join(
        f"{'AB'[side]}: 1 worker {one[r]:8.0f}  2 workers {two[r]:8.0f}  ratio {ratios[r]:.2f}"
        for side, (one, two, ratios) in enumerate(rows)))
print("\n".join(summaries))
gains = [b / a for a, b in zip(rows[0][1], rows[1][1])]
print(f"B's 2 workers over A's, round by round: faster in {sum(g > 1 for g in gains)} of {rounds}, "
      f"median {statistics.median(gains):.3f} ({min(gains):.2f}-{max(gains):.2f})")
if differ:
    print("weights differ from round 1's in: " + ", ".join(f"round {r} build {'AB'[s]} {w} worker(s)" for r, s, w in differ))
    sys.exit(1)
print(f"every run ended with the same weights as the others with as many workers "
      f"({reference[1][:12]}…, {reference[2][:12]}…)")
PY
