#!/usr/bin/env bash
# Beyond one host, simulated: the coordinator and N workers each in a network namespace of
# their own, joined through a switch (a bridge in a namespace) by veth links whose rate is
# limited with tc's token-bucket filter. The coordinator's single link carries every
# worker's weights down and gradients up, as its NIC would in a cluster.
# Runs the same training for each link rate, wire precision and N, and prints measured
# throughput beside the performance model's prediction (README, "Performance model").
#
#   scripts/netsim.sh [--rates "1gbit 10gbit"] [--workers "1 2 3 4"] [--precisions "fp32 fp16"]
#                     [--batch-size 512] [--steps 150] [--json PATH]
#
# Needs root (run it as root, or with sudo where installed: it finds Swift outside sudo's
# PATH) and iproute2 (ip, tc); builds in release. Cleans up its namespaces on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

rates="1gbit 10gbit" counts="1 2 3 4" precisions="fp32 fp16" batch=512 steps=150
json=.build/netsim/netsim.json
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) rates=$2; shift 2 ;;
        --workers) counts=$2; shift 2 ;;
        --precisions) precisions=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "netsim.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "netsim.sh: needs root for network namespaces and tc: run it as root (or with sudo)" >&2; exit 1; }
command -v tc >/dev/null || { echo "netsim.sh: needs tc (iproute2)" >&2; exit 1; }
# sudo's secure PATH hides a toolchain installed for the user: look where installers put it.
if ! command -v swift >/dev/null; then
    home=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)
    for folder in "$home/.local/share/swiftly/bin" /opt/swift/usr/bin /usr/share/swift/usr/bin /usr/local/swift/usr/bin; do
        [ -x "$folder/swift" ] && { PATH=$folder:$PATH; break; }
    done
fi
command -v swift >/dev/null || { echo "netsim.sh: cannot find swift; run it as root with swift on PATH" >&2; exit 1; }

scripts/setup.sh
scripts/fetch-mnist.sh >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
bin=$PWD/.build/release
out=$(dirname "$json")
mkdir -p "$out"

tag=zs$$
max=$(echo $counts | tr ' ' '\n' | sort -n | tail -1)
cleanup() { for ns in $(ip netns list | awk '{print $1}' | grep "^$tag" || true); do ip netns del "$ns"; done; }
trap cleanup EXIT

# The switch, the coordinator's host and one host per worker.
ip netns add ${tag}sw
ip -n ${tag}sw link add br0 type bridge
ip -n ${tag}sw link set br0 up
connect() {  # namespace, address: a veth from the host to the switch
    local ns=$1 address=$2
    ip netns add "$ns"
    ip link add "${ns}e" type veth peer name "${ns}s"
    ip link set "${ns}e" netns "$ns"
    ip link set "${ns}s" netns ${tag}sw
    ip -n "$ns" addr add "$address/24" dev "${ns}e"
    ip -n "$ns" link set "${ns}e" up
    ip -n "$ns" link set lo up
    ip -n ${tag}sw link set "${ns}s" master br0
    ip -n ${tag}sw link set "${ns}s" up
}
connect ${tag}c 10.203.0.1
for i in $(seq 1 "$max"); do connect ${tag}w$i 10.203.0.$((10 + i)); done

limit() {  # rate: every link, both directions (host side and switch side)
    local rate=$1 bytes burst
    bytes=$(python3 -c "import re,sys; m=re.match(r'([0-9.]+)([kmg]?)bit', sys.argv[1]); print(int(float(m[1]) * {'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]] / 8))" "$rate")
    # A small bucket: a large one would let a whole weights message through at full speed
    # after every compute phase, and the link would look faster than its rate.
    burst=$(( bytes / 2000 > 16384 ? bytes / 2000 : 16384 ))
    for ns in ${tag}c $(seq -f "${tag}w%g" 1 "$max"); do
        ip netns exec "$ns" tc qdisc replace dev "${ns}e" root tbf rate "$rate" burst "$burst" latency 20ms
        ip netns exec ${tag}sw tc qdisc replace dev "${ns}s" root tbf rate "$rate" burst "$burst" latency 20ms
    done
}

run() {  # rate, precision, workers
    local rate=$1 precision=$2 n=$3 summary="$out/$1-$2-$3.json"
    ip netns exec ${tag}c "$bin/coordinator" --quiet --workers "$n" --bind tcp://10.203.0.1:5555 --insecure \
        --no-shared-memory --wire-precision "$precision" --batch-size "$batch" --epochs 1 --max-steps "$steps" \
        --summary "$summary" &
    local coordinator=$!
    local pids=()
    for i in $(seq 1 "$n"); do
        ip netns exec ${tag}w$i "$bin/worker" --connect tcp://10.203.0.1:5555 --name "w$i" --log-level warning &
        pids+=($!)
    done
    wait $coordinator
    for pid in "${pids[@]}"; do wait "$pid" || true; done
}

# Single-process compute time per sample: the model's compute term.
"$bin/coordinator" --quiet --local --batch-size "$batch" --epochs 1 --max-steps "$steps" --summary "$out/local.json"

for rate in $rates; do
    limit "$rate"
    for precision in $precisions; do
        for n in $counts; do run "$rate" "$precision" "$n"; done
    done
done

python3 - "$out" "$json" "$batch" "$rates" "$precisions" "$counts" <<'PY'
import json, re, sys
out, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
rates, precisions, counts = sys.argv[4].split(), sys.argv[5].split(), [int(n) for n in sys.argv[6].split()]
local = json.load(open(f"{out}/local.json"))
compute = local["timing"]["compute_seconds"] / local["steps"]          # one core, whole batch
parameters = local["parameters"]
def bits(rate):
    m = re.match(r"([0-9.]+)([kmg]?)bit", rate)
    return float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
def model(n, rate, precision):
    # Per step, one after the other: the coordinator's link carries n copies of the weights
    # down, the workers compute the batch (split over n; 2 cores here, so at most 2 at a
    # time), the link carries n gradients up, and a fixed round trip of about 0.3 ms. The
    # next step's pixels go down while the workers compute, hidden behind it.
    value_bytes = 2 if precision in ("fp16", "bf16") else 4
    wire = 2 * n * parameters * value_bytes * 8 / bits(rate)
    return batch / (compute / min(n, 2) + wire + 0.3e-3)
rows = []
print(f"{'link':<8}{'wire':<6}{'workers':>8}{'samples/s':>12}{'model':>10}{'ratio':>8}{'MB/step':>9}")
for rate in rates:
    for precision in precisions:
        for n in counts:
            run = json.load(open(f"{out}/{rate}-{precision}-{n}.json"))
            predicted = model(n, rate, precision)
            row = {"link": rate, "precision": precision, "workers": n, "samples_per_second": run["samples_per_second"],
                   "predicted": predicted, "measured_over_predicted": run["samples_per_second"] / predicted,
                   "test_accuracy": run["test_accuracy"], "timing": run["timing"], "steps": run["steps"]}
            rows.append(row)
            megabytes = 2 * n * parameters * (2 if precision != "fp32" else 4) / 1e6
            print(f"{rate:<8}{precision:<6}{n:>8}{row['samples_per_second']:>12.0f}{predicted:>10.0f}"
                  f"{row['measured_over_predicted']:>8.2f}{megabytes:>9.2f}")
json.dump({"batch_size": batch, "parameters": parameters, "compute_seconds_per_step_one_core": compute, "runs": rows},
          open(path, "w"), indent=2)
print(f"\nfigures written to {path}")
PY
