#!/usr/bin/env bash
# Starts the coordinator here and workers on other hosts over ssh, encrypted and
# authenticated with CURVE keys made for this run alone.
#
#   scripts/launch.sh --hosts "hostA hostB" [--workers-per-host N] [--port 5555]
#                     [--advertise ADDR] [--bind ADDR] [--remote-dir PATH | --remote-bin DIR]
#                     [--bin DIR] [--worker-option X]... [--ssh-option OPT]... [--insecure]
#                     [--parameter-servers R] [--processes K]
#                     [-- COORDINATOR-OPTIONS]
#
#   --advertise ADDR    address the workers connect to (default: for each host, this host's
#                       source address on the route to it, from `ip route get`)
#   --bind ADDR         address the coordinator binds (default: the advertised address, or
#                       0.0.0.0 when hosts reach this one at different addresses)
#   --port PORT         the coordinator's TCP port (default 5555; open it to the workers)
#   --bin DIR           this host's executables (default: .build/release of this checkout)
#   --remote-dir PATH   the checkout on the other hosts: workers run PATH/.build/release/worker,
#                       or --remote-bin DIR/worker (default: the same folder as --bin)
#   --worker-option X   pass X on to every worker (repeatable), e.g. --no-shared-memory
#   --ssh-option OPT    pass -o OPT to ssh (repeatable), e.g. IdentityFile=~/.ssh/cluster
#   --insecure          no keys: plain text, anyone who reaches the port can join
#   --parameter-servers R  a parameter service of R ranges (coordinator --parameter-servers R);
#                       every worker offers to serve (worker --serve auto: its host's address
#                       towards this one, a free port, which the other hosts must reach), so
#                       workers beyond R are spare servers
#   --processes K       every worker runs K compute processes (worker --processes K, K a power
#                       of two); without --shards after the `--`, the coordinator gets
#                       workers x K shards
#
# Each host needs passwordless ssh (BatchMode) and the built `worker`. The keys and the run
# secret go to each host through ssh's standard input into private files, never onto a command line, and are
# deleted when the worker ends; a worker from another run cannot join this one. The job's
# exit status is the coordinator's. If ssh to a host fails, or a worker fails before it
# joined, the run stops at once with that error. When the coordinator ends, every remote
# worker is stopped: closing the ssh connection tells the remote side.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
hosts="" per_host=1 port=5555 advertise="" bind="" remote_dir="" remote_bin="" bin=$root/.build/release
insecure=false servers=0 processes=1
worker_options=() ssh_options=() coordinator_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts=$2; shift 2 ;;
        --workers-per-host) per_host=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --advertise) advertise=$2; shift 2 ;;
        --bind) bind=$2; shift 2 ;;
        --remote-dir) remote_dir=$2; shift 2 ;;
        --remote-bin) remote_bin=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --worker-option) worker_options+=("$2"); shift 2 ;;
        --ssh-option) ssh_options+=(-o "$2"); shift 2 ;;
        --insecure) insecure=true; shift ;;
        --parameter-servers) servers=$2; shift 2 ;;
        --processes) processes=$2; shift 2 ;;
        --) shift; coordinator_args=("$@"); break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "launch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$hosts" ] || { echo "launch.sh: --hosts is required" >&2; exit 2; }
[[ "$per_host" =~ ^[1-9][0-9]*$ ]] || { echo "launch.sh: --workers-per-host must be a positive number" >&2; exit 2; }
[[ "$port" =~ ^[1-9][0-9]*$ ]] && [ "$port" -le 65535 ] || { echo "launch.sh: --port must be 1-65535" >&2; exit 2; }
. "$(dirname "$0")/service-options.sh"
check_service_options launch.sh "$servers" "$processes" $(( $(wc -w <<< "$hosts") * per_host )) "${coordinator_args[@]}"
coordinator_args+=("${service_coordinator_args[@]}")
worker_options=("${service_worker_args[@]}" "${worker_options[@]}")
# The same folder as here, unless told.
[ -n "$remote_bin" ] || remote_bin=${remote_dir:+$remote_dir/.build/release}
remote_bin=${remote_bin:-$bin}

# The address this host has towards HOST: the source of the route to it.
route_source() {
    local host=${1#*@} address
    address=$(getent ahostsv4 "$host" 2>/dev/null | awk '{print $1; exit}') || true
    [ -n "$address" ] || return 1
    ip -4 route get "$address" 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1
}
declare -A advertised=()
for host in $hosts; do
    address=$advertise
    [ -n "$address" ] || address=$(route_source "$host") || true
    if [ -z "$address" ]; then
        echo "launch.sh: cannot tell which address of this host $host reaches (no route, or the name does not resolve here); pass --advertise ADDR" >&2
        exit 2
    fi
    advertised[$host]=$address
done
if [ -z "$bind" ]; then
    distinct=$(printf '%s\n' "${advertised[@]}" | sort -u)
    [ "$(printf '%s\n' "$distinct" | wc -l)" = 1 ] && bind=$distinct || bind=0.0.0.0
fi

# Keys for this run only, in a folder only we can read; gone when we exit.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/zmqt-launch.XXXXXX")
chmod 700 "$run_dir"
pids=() feeds=() logs=()
stop_workers() {
    local fd
    for fd in "${feeds[@]}"; do exec {fd}>&- 2>/dev/null || true; done
    feeds=()
}
cleanup() {
    stop_workers
    [ -z "${coordinator:-}" ] || kill "$coordinator" 2>/dev/null || true
    [ ${#pids[@]} = 0 ] || kill "${pids[@]}" 2>/dev/null || true
    rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

security=(--insecure)
if ! $insecure; then
    "$bin/coordinator" keygen --name coordinator --output "$run_dir" >/dev/null
    security=(--curve-secret-key "$run_dir/coordinator.key" --authorized-keys "$run_dir/workers")
fi
key_of() { grep -v '^#' "$1" | head -n 1; }
# Every worker's key is authorised before the coordinator starts: it reads them once.
# Workers are named HOST-1, HOST-2, ... (numbered on, should a host be listed twice).
worker_names=() worker_hosts=()
declare -A on_host=()
for host in $hosts; do
    for _ in $(seq 1 "$per_host"); do
        on_host[$host]=$(( ${on_host[$host]:-0} + 1 ))
        worker_names+=("${host#*@}-${on_host[$host]}")
        worker_hosts+=("$host")
    done
done
if ! $insecure; then
    for name in "${worker_names[@]}"; do
        "$bin/coordinator" keygen --name "$name" --output "$run_dir/workers" >/dev/null
        mv "$run_dir/workers/$name.key" "$run_dir/$name.key"
    done
fi

data_given=false
for option in "${coordinator_args[@]}"; do case "$option" in --data|--data=*) data_given=true ;; esac; done
$data_given || coordinator_args+=(--data "${MNIST_DIR:-$root/data}")
count=${#worker_names[@]}
# The run secret every worker's hello must prove: written by the coordinator (mode 0600)
# before it waits for workers, and handed to each over ssh's standard input.
"$bin/coordinator" --workers "$count" --bind "tcp://$bind:$port" --secret-file "$run_dir/run.secret" \
    "${security[@]}" "${coordinator_args[@]}" &
coordinator=$!
for _ in $(seq 600); do [ -s "$run_dir/run.secret" ] || ! kill -0 "$coordinator" 2>/dev/null && break; sleep 0.1; done
if [ ! -s "$run_dir/run.secret" ]; then
    status=0
    wait "$coordinator" || status=$?
    echo "launch.sh: the coordinator did not start (status $status)" >&2
    exit $(( status == 0 ? 1 : status ))
fi
run_secret=$(head -n 1 "$run_dir/run.secret")

quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
# Run by the remote login shell (POSIX sh): keys from standard input into a private folder,
# the worker in the background, and a watch on standard input (kept as fd 3: sh gives
# background jobs /dev/null) that stops the worker when this script's end closes.
remote_script() {  # endpoint, name
    # At info level a worker says when it joined (one line), which tells a worker that
    # failed to start from one that died later; options given later win.
    local options=" --log-level info" option
    for option in "${worker_options[@]}"; do options="$options $(quote "$option")"; done
    local keys=""
    $insecure || keys="--curve-server-key \"\$dir/coordinator.pub\" --curve-secret-key \"\$dir/worker.key\""
    cat <<EOF
umask 077
exec 3<&0
dir=\$(mktemp -d) || exit 97
trap 'rm -rf "\$dir"' EXIT
IFS= read -r server || exit 97
IFS= read -r secret || exit 97
IFS= read -r run || exit 97
printf '%s\n' "\$server" > "\$dir/coordinator.pub"
printf '%s\n' "\$secret" > "\$dir/worker.key"
printf '%s\n' "\$run" > "\$dir/run.secret"
[ -x $(quote "$remote_bin/worker") ] || { echo "$2: no executable $(quote "$remote_bin/worker") on \$(hostname)" >&2; exit 97; }
$(quote "$remote_bin/worker") --connect $(quote "$1") --name $(quote "$2") --parent-pid \$\$ --secret-file "\$dir/run.secret" $keys$options < /dev/null 3<&- &
worker=\$!
echo "launch.sh: worker $2 started on \$(hostname) (pid \$worker)" >&2
( while IFS= read -r _; do :; done <&3; kill \$worker 2>/dev/null ) &
watch=\$!
wait \$worker
status=\$?
kill \$watch 2>/dev/null
exit \$status
EOF
}

for index in "${!worker_names[@]}"; do
    name=${worker_names[$index]} host=${worker_hosts[$index]}
    server_key="" secret_key=""
    if ! $insecure; then
        server_key=$(key_of "$run_dir/coordinator.pub")
        secret_key=$(key_of "$run_dir/$name.key")
    fi
    log=$run_dir/$name.log
    # ssh reads its standard input from a pipe this script holds open until the end.
    mkfifo "$run_dir/$name.feed"
    ssh -o BatchMode=yes "${ssh_options[@]}" "$host" "$(remote_script "tcp://${advertised[$host]}:$port" "$name")" \
        < "$run_dir/$name.feed" 2> >(tee "$log" >&2) &
    pids+=($!)
    exec {feed}> "$run_dir/$name.feed"
    feeds+=("$feed")
    logs+=("$log")
    printf '%s\n%s\n%s\n' "$server_key" "$secret_key" "$run_secret" >&"$feed"
done

# Until the coordinator ends: a worker that ends in failure before it joined (ssh failed,
# no executable, refused by the coordinator, ...) ends the run: the coordinator would wait
# for it until its --startup-timeout. One that dies after it joined is the coordinator's
# business: its shards go to the others.
# A worker told another --log-level may not say that it joined: then only a failure before
# it started (ssh, no executable) counts.
joined="joined as worker"
for option in "${worker_options[@]}"; do [ "$option" != --log-level ] || joined=" started on "; done
# (bash's own notices of jobs that died are kept off stderr; ours go to fd 5.)
exec 5>&2
while kill -0 "$coordinator"; do
    for index in "${!pids[@]}"; do
        pid=${pids[$index]}
        [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null || continue
        status=0
        wait "$pid" || status=$?
        pids[$index]=""
        if [ "$status" != 0 ] && ! grep -q -e "$joined" "${logs[$index]}"; then
            reason=$(grep -v '^[[:space:]]*$' "${logs[$index]}" | tail -n 1 | tr -cd '[:print:]')
            echo "launch.sh: could not start worker ${worker_names[$index]} (ssh exit $status): ${reason:-no message}; stopping" >&5
            kill "$coordinator" || true
            wait "$coordinator" || true
            exit 1
        fi
    done
    sleep 0.2
done 2>/dev/null
status=0
wait "$coordinator" 2>/dev/null || status=$?
[ "$status" -le 128 ] || echo "launch.sh: the coordinator was killed by signal $((status - 128))" >&2
# Workers the coordinator told to shut down are already going; the others are stopped now.
stop_workers
for pid in "${pids[@]}"; do
    [ -z "$pid" ] && continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill "$pid" 2>/dev/null || true
done
exit "$status"
