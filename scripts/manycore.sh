#!/usr/bin/env bash
# Many workers on one host: the busiest process's serial time per step against N spawned
# workers, without and with a parameter service (scripts/README.md, "Many workers on one host").
#
#   scripts/manycore.sh [--workers "2 16 48"] [--servers "2 8 16"] [--batch-size 1024]
#                       [--steps 40] [--debug] [-- coordinator args]
#
# For each N (and the R at the same position in --servers): one run without servers, one with
# --parameter-servers R; both spawn N workers on this host (shared memory). Two measures of the
# coordinator's serial time per step: wall, its send + receive + reduce + optimizer + batch time
# from its summary (with servers, send includes copying the servers' weights ranges into the
# shared weights slot and passing results on to the servers), and CPU, the CPU time of the
# thread that ran the steps (`timing.thread_cpu_seconds`: its work alone, busy-waiting
# included, without the time other processes took its core). A server's is the CPU time of its
# sum, update and sends per applied step, from its closing log line; the busiest process is the
# larger of the coordinator's CPU time and the slowest server's. With fewer cores than workers
# the wall figures count every process that took the coordinator's core; the CPU figures are
# what a host with a core per process would see, less its memory-bandwidth contention.
# --debug uses the debug build as it is (for a quick look; times are several times slower).
set -euo pipefail
cd "$(dirname "$0")/.."

workers="2 16 48"
servers="2 8 16"
batch=1024
steps=40
build=release
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=$2; shift 2 ;;
        --servers) servers=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --debug) build=debug; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "manycore.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
read -r -a ns <<< "$workers"
read -r -a rs <<< "$servers"
[ "${#ns[@]}" -eq "${#rs[@]}" ] || { echo "manycore.sh: --workers and --servers need as many entries" >&2; exit 2; }

if [ "$build" = release ]; then
    scripts/setup.sh
    scripts/fetch-mnist.sh >/dev/null
    swift build -c release --product coordinator >/dev/null
    swift build -c release --product worker >/dev/null
fi
out=.build/manycore
mkdir -p "$out"
common=(--batch-size "$batch" --max-steps "$steps" --epochs 1000 --bind "tcp://127.0.0.1:*" "${extra[@]}")
for i in "${!ns[@]}"; do
    n=${ns[$i]} r=${rs[$i]}
    ".build/$build/coordinator" --quiet --spawn-workers "$n" "${common[@]}" --summary "$out/n$n.json" >/dev/null
    ".build/$build/coordinator" --log-level notice --spawn-workers "$n" --parameter-servers "$r" "${common[@]}" \
        --summary "$out/n$n-r$r.json" >/dev/null 2>"$out/n$n-r$r.log"
done

python3 - "$out" "$workers" "$servers" <<'PY'
import json, re, sys
out, ns, rs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def coordinator_ms(run):
    t = run["timing"]
    serial = sum(t[k] for k in ("send_seconds", "receive_seconds", "reduce_seconds", "optimizer_seconds", "batch_seconds"))
    return 1000 * serial / run["steps"]
def coordinator_cpu_ms(run):
    return 1000 * run["timing"]["thread_cpu_seconds"] / run["steps"]
print(f"{'workers':>7} {'R':>3} {'coord wall ms (none / R)':>25} {'coord CPU ms (none / R)':>24} {'slowest server CPU ms':>22} "
      f"{'busiest CPU ms (none / R)':>26} {'samples/s (none / R)':>22} {'shared steps':>13} {'same hash':>9}")
for n, r in zip(ns, rs):
    plain = json.load(open(f"{out}/n{n}.json"))
    served = json.load(open(f"{out}/n{n}-r{r}.json"))
    log = open(f"{out}/n{n}-r{r}.log").read()
    server = max([float(ms) for ms in re.findall(r"applied \d+ steps(?: from \d+ gradient ranges)?, ([0-9.]+) (?:CPU )?ms each", log)] or [0.0])
    w0, w1 = coordinator_ms(plain), coordinator_ms(served)
    c0, c1 = coordinator_cpu_ms(plain), coordinator_cpu_ms(served)
    print(f"{n:>7} {r:>3} {w0:>12.2f} / {w1:<10.2f} {c0:>11.2f} / {c1:<10.2f} {server:>22.2f} {c0:>12.2f} / {max(c1, server):<11.2f} "
          f"{plain['samples_per_second']:>10.0f} / {served['samples_per_second']:<9.0f} "
          f"{served['parameter_service']['shared_memory_steps']:>13} {str(plain['weights_sha256'] == served['weights_sha256']):>9}")
PY
