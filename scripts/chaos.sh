#!/usr/bin/env bash
# Fault injection: trains MNIST with 3 hand-started local workers and, once training is
# under way, hits them at a random moment: SIGKILL one, SIGSTOP one for 1.5 s, or SIGKILL
# two. Every run must end with the weights of the same run without faults, bit for bit,
# and refuse no message.
#
#   scripts/chaos.sh [--runs N] [--debug] [--pin] [-- coordinator args]
#
# Defaults: 20 runs of the release build (--debug: the debug build, slower, other timings);
# --pin pins worker i to CPU i mod nproc, as spawned workers are, so that the workers poll
# for their weights and the coordinator for the last results (their busy waits);
# 784-32-10, batch 60, 1,500 steps in 3 shards. Arguments after `--` go to every run and
# to the fault-free one (say `-- --wire-precision fp16` or `-- --no-shared-memory`).
# A failed run's logs stay in .build/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20
configuration=release
pin=false
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --debug) configuration=debug; shift ;;
        --pin) pin=true; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "chaos.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

scripts/setup.sh
scripts/fetch-mnist.sh >/dev/null
swift build -c "$configuration" --product coordinator >/dev/null
swift build -c "$configuration" --product worker >/dev/null
bin=.build/$configuration
out=.build/chaos
mkdir -p "$out"
settings=(--data data --hidden 32 --batch-size 60 --epochs 200 --max-steps 1500 --shards 3 --seed 11 --quiet
          --worker-timeout 1 "$@")
field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2" 2>/dev/null || echo none; }
weights() { field "$1" weights_sha256; }

"$bin/coordinator" "${settings[@]}" --local --summary "$out/reference.json"
reference=$(weights "$out/reference.json")
echo "fault-free weights: ${reference:0:16}…"

failures=0
for run in $(seq "$runs"); do
    dir=$out/run-$run
    rm -rf "$dir"
    mkdir -p "$dir"
    "$bin/coordinator" "${settings[@]}" --workers 3 --bind "tcp://127.0.0.1:*" --endpoint-file "$dir/endpoint" \
        --summary "$dir/summary.json" --checkpoint "$dir/checkpoint" --checkpoint-every 100 --log-level notice \
        2> "$dir/coordinator.log" &
    coordinator=$!
    while [ ! -s "$dir/endpoint" ] && kill -0 "$coordinator" 2>/dev/null; do sleep 0.01; done
    endpoint=$(cat "$dir/endpoint" 2>/dev/null || echo none)
    workers=()
    for index in 0 1 2; do
        cpu=()
        if $pin; then cpu=(--cpu "$((index % $(nproc)))"); fi
        "$bin/worker" --connect "$endpoint" --name "w$index" --coordinator-timeout 20 "${cpu[@]}" 2> "$dir/w$index.log" &
        workers+=($!)
    done
    # The first checkpoint says training is under way; then up to a second more.
    while [ ! -f "$dir/checkpoint" ] && kill -0 "$coordinator" 2>/dev/null; do sleep 0.01; done
    sleep "$(printf '0.%02d' $((RANDOM % 100)))"
    victim=$((RANDOM % 3))
    other=$(((victim + 1) % 3))
    status=0
    # In braces with stderr to /dev/null: bash prints a "Killed" notice for each SIGKILLed
    # worker when it next reaps a child, which may be any command from the kill on.
    {
        case $((RANDOM % 3)) in
            0) fault="SIGKILL w$victim"
               kill -KILL "${workers[$victim]}" || true ;;
            1) fault="SIGSTOP w$victim for 1.5 s"
               kill -STOP "${workers[$victim]}" || true
               sleep 1.5
               kill -CONT "${workers[$victim]}" || true ;;
            2) fault="SIGKILL w$victim and w$other"
               kill -KILL "${workers[$victim]}" "${workers[$other]}" || true ;;
        esac
        wait "$coordinator" || status=$?
        for pid in "${workers[@]}"; do wait "$pid" || true; done
    } 2>/dev/null
    result=$(weights "$dir/summary.json")
    # A clean fail-over refuses nothing: late answers count as stale, not as rejected.
    rejected=$(field "$dir/summary.json" rejected_messages)
    if [ "$status" = 0 ] && [ "$result" = "$reference" ] && [ "$rejected" = 0 ]; then
        echo "run $run: $fault: same weights"
        rm -rf "$dir"
    else
        echo "run $run: $fault: FAILED (coordinator exit status $status, weights ${result:0:16}," \
             "$rejected rejected messages); logs in $dir"
        failures=$((failures + 1))
    fi
done
echo "$((runs - failures)) of $runs runs ended with the fault-free weights"
[ "$failures" = 0 ]
