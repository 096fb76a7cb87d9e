#!/usr/bin/env bash
# Beyond one host, simulated: the coordinator and N workers each in a network namespace of
# their own, joined through a switch (a bridge in a namespace) by veth links whose rate is
# limited with tc's token-bucket filter. The coordinator's single link carries every
# worker's weights down and gradients up, as its NIC would in a cluster.
# Runs the same training for each link rate, N and wire precision, and prints measured
# throughput beside the performance model's prediction (README, "Performance model").
# After the project's runs for each N, PyTorch DDP (gloo all-reduce, CPU, fp32, one rank per
# worker host, scripts/ddp_mnist.py) trains the same network on the same namespaces and links,
# with the same global batch and steps; the table gives both and their ratio.
# Each veth's byte counters are read before and after every run: the busiest link's bytes
# per step (both directions added, and the busier one alone) are printed in units of P·v (P
# parameters, v bytes per value on the wire), beside 2·P·v. The counters take in everything
# on the link: headers, the handshake, and the project's batches of pixels.
#
#   scripts/netsim.sh [--rates "1gbit 10gbit"] [--workers "1 2 3 4"] [--precisions "fp32 fp16"]
#                     [--modes "coordinator service"] [--batch-size 512 | --batch-size-per-worker B]
#                     [--steps 150] [--model SPEC] [--no-ddp] [--python PATH] [--burst BYTES]
#                     [--json PATH] [--worker-data] [--host-cpus FRACTION] [--host-cpu-period US]
#
# --modes: how the project moves weights and gradients, each run for every N and precision:
#   coordinator  the coordinator's link carries them (no --parameter-servers): N·P·v each way;
#   service      the parameter service: every worker host also serves one range
#                (`worker --serve`, `coordinator --parameter-servers N`), so each host's link
#                carries 2(N-1)/N·P·v each way and the coordinator's only the schedule;
#   coordinator-curve, service-curve: the same with CURVE on every link (keys made per run by
#                `coordinator keygen`), to measure what encryption costs beside plain text.
#   Default: coordinator.
# --worker-data: every simulated host's worker loads the training set itself (`worker --data
#   data`, the folder the coordinator reads), so the coordinator sends it sample indices
#   instead of pixels (each run's summary says so in worker_stats[].data).
# --batch-size-per-worker B: weak scaling. The global batch is B times N for each N (the
#   coordinator's own --batch-size-per-worker, and the same for DDP), and the table adds the
#   efficiency throughput(N) / (N/N0 · throughput(N0)), N0 the smallest N given (normally 1).
# --model SPEC: the coordinator's --model (e.g. conv5x32,pool2,conv5x64,pool2,dense128,dense10),
#   for DDP too; default the MLP 784-128-10. A convnet makes every run compute-bound on a
#   small machine: say so when reporting it.
# --python PATH: an interpreter with torch and numpy for DDP (or NETSIM_PYTHON=PATH); without
#   it, .build/venv is used, and made first if missing (python3 -m venv, pip install torch
#   numpy: a large download). --no-ddp runs the project only.
# --burst BYTES: tc tbf's bucket (default the rate's 0.5 ms, at least 16 KiB). On a loaded VM
#   a bucket that small held one TCP stream to 0.71-0.86 of a 1gbit link's rate, 1 ms to
#   0.93, 2 ms to 0.95 (the most 1500-byte frames allow); a large one lets a whole weights
#   message through at once after every compute phase, and the link looks faster than it is.
# --host-cpus FRACTION: give every simulated host (each worker's namespace: the project's worker,
#   its server and its DDP rank alike) that share of one CPU, with a CPU cgroup quota (cgroup v1
#   cpu.cfs_quota_us or v2 cpu.max, over --host-cpu-period), so that N hosts have N times one
#   host's compute as on a real cluster instead of sharing this machine's cores. Keep N times
#   FRACTION below the machine's CPUs (0.4 for 4 hosts on 2 cores leaves the rest to the
#   coordinator and the kernel's network work). The model then counts FRACTION of a core per host.
# --host-cpu-period US: the quota's period in microseconds (default 10000). A host that spent
#   its quota waits for the next period, up to (1 - FRACTION) of it, where a real host would
#   run at once: a shorter period is closer to a slower CPU. The kernel takes no quota under
#   1 ms, so the period must be at least 1000 / FRACTION.
# --json PATH (default .build/netsim/netsim.json): every run, both systems, the side-by-side
#   ratios and the bytes per step; scripts/plot.py netsim PATH draws it.
#
# Two CPUs run every simulated host here: beyond about 4 hosts every system is CPU-bound.
# Needs root (run it as root, or with sudo where installed: it finds Swift outside sudo's
# PATH) and iproute2 (ip, tc); builds in release. Cleans up its namespaces on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

rates="1gbit 10gbit" counts="1 2 3 4" precisions="fp32 fp16" modes=coordinator batch=512 per_worker="" steps=150
model="" ddp=1 python=${NETSIM_PYTHON:-} batch_given=0 burst="" worker_data=() host_cpus="" cpu_period=10000
json=.build/netsim/netsim.json
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) rates=$2; shift 2 ;;
        --workers) counts=$2; shift 2 ;;
        --precisions) precisions=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --batch-size) batch=$2; batch_given=1; shift 2 ;;
        --batch-size-per-worker) per_worker=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --no-ddp) ddp=0; shift ;;
        --python) python=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        --worker-data) worker_data=(--data data); shift ;;
        --host-cpus) host_cpus=$2; shift 2 ;;
        --host-cpu-period) cpu_period=$2; shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "netsim.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "netsim.sh: $1 must be a positive integer (got '$2')" >&2; exit 2; }; }
positive --steps "$steps"
positive --batch-size "$batch"
[ -z "$per_worker" ] || positive --batch-size-per-worker "$per_worker"
[ -z "$burst" ] || positive --burst "$burst"
positive --host-cpu-period "$cpu_period"
[ -z "$per_worker" ] || [ "$batch_given" = 0 ] || { echo "netsim.sh: --batch-size and --batch-size-per-worker both set the batch: give one" >&2; exit 2; }
for n in $counts; do positive --workers "$n"; done
if [ -n "$host_cpus" ]; then
    [[ $host_cpus =~ ^(0?\.[0-9]*[1-9][0-9]*|[1-9][0-9]*(\.[0-9]+)?)$ ]] || { echo "netsim.sh: --host-cpus takes a positive share of a CPU, e.g. 0.4 (got '$host_cpus')" >&2; exit 2; }
fi
for mode in $modes; do
    case "$mode" in coordinator|service|coordinator-curve|service-curve) ;;
        *) echo "netsim.sh: --modes takes coordinator, service, coordinator-curve, service-curve (got '$mode')" >&2; exit 2 ;;
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
if [ "$ddp" = 1 ]; then
    if [ -z "$python" ]; then
        python=$PWD/.build/venv/bin/python
        if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
            echo "netsim.sh: making .build/venv with torch and numpy for the DDP runs (pip; --python PATH takes an existing one) ..."
            python3 -m venv .build/venv 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .build/venv; }
            .build/venv/bin/pip install --quiet torch numpy
        fi
    fi
    "$python" -c 'import torch, numpy' || { echo "netsim.sh: $python cannot import torch and numpy (see --python)" >&2; exit 1; }
fi
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
bin=$PWD/.build/release
out=$(dirname "$json")
mkdir -p "$out"
rm -f "$out"/*.counters

tag=zs$$
max=$(echo $counts | tr ' ' '\n' | sort -n | tail -1)
cleanup() { for ns in $(ip netns list | awk '{print $1}' | grep "^$tag" || true); do ip netns del "$ns"; done; }
trap cleanup EXIT

# Each simulated host's CPU share (--host-cpus): a CPU cgroup per worker host.
cgroups=""
if [ -n "$host_cpus" ]; then
    [ "$cpu_period" -le 1000000 ] || { echo "netsim.sh: --host-cpu-period takes at most 1000000 us (got $cpu_period)" >&2; exit 2; }
    quota=$(python3 -c "print(round(float('$host_cpus') * $cpu_period))")
    [ "$quota" -ge 1000 ] || { echo "netsim.sh: --host-cpus $host_cpus of a $cpu_period us period is a quota of $quota us; the kernel takes no less than 1000 (give a period of at least $(python3 -c "import math; print(math.ceil(1000 / float('$host_cpus')))"))" >&2; exit 2; }
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
        grep -qw cpu /sys/fs/cgroup/cgroup.controllers || { echo "netsim.sh: --host-cpus needs the cgroup cpu controller" >&2; exit 1; }
        echo +cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        cgroups=/sys/fs/cgroup
    elif [ -d /sys/fs/cgroup/cpu ]; then  # cgroup v1
        cgroups=/sys/fs/cgroup/cpu
    else
        echo "netsim.sh: --host-cpus needs a CPU cgroup (/sys/fs/cgroup/cpu or cgroup v2)" >&2; exit 1
    fi
    hosts_cpus=$(python3 -c "print(float('$host_cpus') * $max)")
    python3 -c "import os,sys; sys.exit(float('$hosts_cpus') > os.cpu_count())" ||
        echo "netsim.sh: warning: $max hosts of $host_cpus CPU need $hosts_cpus CPUs; this machine has $(nproc)" >&2
fi
cleanup_cgroups() { [ -z "$cgroups" ] || for group in "$cgroups"/${tag}w*; do [ -d "$group" ] && rmdir "$group" 2>/dev/null || true; done; }
trap 'cleanup; cleanup_cgroups' EXIT
make_cgroup() {  # host: its CPU cgroup with the --host-cpus quota
    local group=$cgroups/$1
    mkdir -p "$group"
    if [ -f "$group/cpu.max" ]; then echo "$quota $cpu_period" > "$group/cpu.max"
    else echo "$cpu_period" > "$group/cpu.cfs_period_us"; echo "$quota" > "$group/cpu.cfs_quota_us"; fi
}
on_host() {  # namespace, command...: run it in the host's namespace (and its CPU cgroup)
    local ns=$1; shift
    if [ -n "$cgroups" ] && [ "$ns" != ${tag}c ]; then
        sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cgroups/$ns" ip netns exec "$ns" "$@"
    else
        ip netns exec "$ns" "$@"
    fi
}

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
hosts="${tag}c $(seq -f "${tag}w%g" 1 "$max" | tr '\n' ' ')"
connect ${tag}c 10.203.0.1
for i in $(seq 1 "$max"); do connect ${tag}w$i 10.203.0.$((10 + i)); done
[ -z "$cgroups" ] || for i in $(seq 1 "$max"); do make_cgroup ${tag}w$i; done

limit() {  # rate: every link, both directions (host side and switch side)
    local rate=$1 bytes bucket
    bytes=$(python3 -c "import re,sys; m=re.match(r'([0-9.]+)([kmg]?)bit', sys.argv[1]); print(int(float(m[1]) * {'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]] / 8))" "$rate")
    # A small bucket: a large one would let a whole weights message through at full speed
    # after every compute phase, and the link would look faster than its rate.
    bucket=${burst:-$(( bytes / 2000 > 16384 ? bytes / 2000 : 16384 ))}
    for ns in $hosts; do
        ip netns exec "$ns" tc qdisc replace dev "${ns}e" root tbf rate "$rate" burst "$bucket" latency 20ms
        ip netns exec ${tag}sw tc qdisc replace dev "${ns}s" root tbf rate "$rate" burst "$bucket" latency 20ms
    done
}

counters() {  # file: "host tx_bytes rx_bytes" of each host's end of its link, one line each
    for ns in $hosts; do
        echo "${ns#$tag} $(ip netns exec "$ns" cat "/sys/class/net/${ns}e/statistics/tx_bytes" "/sys/class/net/${ns}e/statistics/rx_bytes" | tr '\n' ' ')"
    done > "$1"
}

global_batch() { echo $(( ${per_worker:-0} > 0 ? per_worker * $1 : batch )); }
batch_options() {  # workers: the coordinator's batch options
    if [ -n "$per_worker" ]; then echo "--batch-size-per-worker $per_worker"; else echo "--batch-size $batch"; fi
}
model_options=()
[ -z "$model" ] || model_options=(--model "$model")

keys=$out/keys
make_keys() {  # the CURVE key pairs of the -curve modes: the coordinator's and one for the workers
    [ -f "$keys/workers/worker.pub" ] && return
    rm -rf "$keys"; mkdir -p "$keys/workers"
    "$bin/coordinator" keygen --name coordinator --output "$keys" >/dev/null
    "$bin/coordinator" keygen --name worker --output "$keys/workers" >/dev/null
}

run() {  # rate, mode, precision, workers
    local rate=$1 mode=$2 precision=$3 n=$4 name="$1-$2-$3-$4"
    # Enough epochs for --steps even when the batch grows with N (an epoch is 60,000 samples).
    local epochs=$(( steps * $(global_batch "$n") / 60000 + 1 ))
    local security=(--insecure) worker_security=() service=() port=5555
    if [[ $mode == *-curve ]]; then
        make_keys
        security=(--curve-secret-key "$keys/coordinator.key" --authorized-keys "$keys/workers")
        worker_security=(--curve-server-key "$keys/coordinator.pub" --curve-secret-key "$keys/workers/worker.key")
    fi
    [[ $mode != service* ]] || service=(--parameter-servers "$n")
    counters "$out/$name.before.counters"
    ip netns exec ${tag}c "$bin/coordinator" --quiet --workers "$n" --bind tcp://10.203.0.1:$port "${security[@]}" \
        "${service[@]}" \
        --no-shared-memory --wire-precision "$precision" $(batch_options) --epochs "$epochs" --max-steps "$steps" \
        "${model_options[@]}" --summary "$out/$name.json" &
    local coordinator=$!
    local pids=()
    for i in $(seq 1 "$n"); do
        local serve=()
        [[ $mode != service* ]] || serve=(--serve tcp://10.203.0.$((10 + i)):5600)
        on_host ${tag}w$i "$bin/worker" --connect tcp://10.203.0.1:$port --name "w$i" --log-level warning \
            "${worker_security[@]}" "${serve[@]}" "${worker_data[@]}" &
        pids+=($!)
    done
    wait $coordinator
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    counters "$out/$name.after.counters"
}

ddp_runs=0
ddp_run() {  # rate, workers: DDP on worker hosts 1..N, rank 0 on the first
    local rate=$1 n=$2 name="$1-ddp-$2" status=0
    local port=$((29500 + ddp_runs))  # a fresh port each time: no wait for the last run's to close
    ddp_runs=$((ddp_runs + 1))
    counters "$out/$name.before.counters"
    local pids=()
    for i in $(seq 1 "$n"); do
        local summary=()
        [ "$i" != 1 ] || summary=(--summary "$out/$name.json")
        on_host ${tag}w$i env GLOO_SOCKET_IFNAME=${tag}w${i}e "$python" scripts/ddp_mnist.py \
            --rank $((i - 1)) --world-size "$n" --master 10.203.0.11:$port --batch-size "$(global_batch "$n")" \
            --steps "$steps" --model "${model:-dense128,dense10}" --cache "$out/ddp-cache" "${summary[@]}" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    [ "$status" = 0 ] || { echo "netsim.sh: the DDP run $name failed" >&2; exit 1; }
    counters "$out/$name.after.counters"
}

# Single-process compute time per sample: the model's compute term.
"$bin/coordinator" --quiet --local $(batch_options) --epochs 1 --max-steps "$steps" "${model_options[@]}" \
    --summary "$out/local.json"

for rate in $rates; do
    limit "$rate"
    for n in $counts; do
        for mode in $modes; do
            for precision in $precisions; do run "$rate" "$mode" "$precision" "$n"; done
        done
        [ "$ddp" = 0 ] || ddp_run "$rate" "$n"
    done
done

python3 scripts/netsim_report.py --out "$out" --json "$json" --rates "$rates" --precisions "$precisions" --modes "$modes" \
    --workers "$counts" --batch-size "$batch" --batch-size-per-worker "${per_worker:-0}" --ddp "$ddp" \
    --burst "${burst:-0}" --host-cpus "${host_cpus:-0}" --host-cpu-period "$cpu_period"
