#!/usr/bin/env bash
# Starts workers on other hosts over ssh, then the coordinator here.
#
#   scripts/launch.sh --hosts "hostA hostB" [--workers-per-host N] [--bind tcp://0.0.0.0:5555]
#                     [--advertise tcp://THIS_HOST:5555] [--remote-dir PATH] [-- coordinator args]
#
# Each host needs the built `worker` executable at --remote-dir (default: this checkout's
# path) and passwordless ssh. The coordinator starts first; each worker gets the run secret
# on its standard input (never on a command line) and exits when the coordinator tells it
# to or goes away.
# Binding beyond loopback needs CURVE keys or --insecure (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=""
per_host=1
bind="tcp://0.0.0.0:5555"
advertise=""
remote_dir=$PWD
coordinator_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts=$2; shift 2 ;;
        --workers-per-host) per_host=$2; shift 2 ;;
        --bind) bind=$2; shift 2 ;;
        --advertise) advertise=$2; shift 2 ;;
        --remote-dir) remote_dir=$2; shift 2 ;;
        --) shift; coordinator_args=("$@"); break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "launch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$hosts" ] || { echo "launch.sh: --hosts is required" >&2; exit 2; }
port=${bind##*:}
[ -n "$advertise" ] || advertise="tcp://$(hostname -f):$port"

count=0
for host in $hosts; do count=$((count + per_host)); done
secret_dir=$(mktemp -d)
secret=$secret_dir/run.secret
.build/release/coordinator --workers "$count" --bind "$bind" --secret-file "$secret" "${coordinator_args[@]}" &
coordinator=$!
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$secret_dir"' EXIT
for _ in $(seq 600); do [ -s "$secret" ] || ! kill -0 "$coordinator" 2>/dev/null && break; sleep 0.1; done
[ -s "$secret" ] || { wait "$coordinator"; exit $?; }
for host in $hosts; do
    for i in $(seq 1 "$per_host"); do
        ssh -o BatchMode=yes "$host" "cd '$remote_dir' && exec .build/release/worker --connect '$advertise' --name '$host-$i' --secret-file -" < "$secret" &
        pids+=($!)
    done
done
status=0
wait "$coordinator" || status=$?
wait "${pids[@]}" || true
exit $status
