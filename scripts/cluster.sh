#!/usr/bin/env bash
# One command for a whole job under an MPI or Slurm launcher: every process takes its role
# from its rank (rank 0 is the coordinator, the others are workers).
#
#   mpirun -np 5 --enable-recovery scripts/cluster.sh [OPTIONS] [-- COORDINATOR-OPTIONS]
#   srun --ntasks 5 scripts/cluster.sh [OPTIONS] [-- COORDINATOR-OPTIONS]
#
# Options:
#   --rendezvous FILE   where rank 0 publishes its endpoint and, if it fails, its error; on a
#                       filesystem every host sees (default: .zmqt-endpoint-RUN in the current
#                       folder, RUN naming this launch: Slurm job and step, or the MPI job)
#   --run-id ID         this launch's identity, for launchers that give none
#   --address ADDR      address rank 0 binds (default: 127.0.0.1 when every rank is on one
#                       host, else this host's first address from `hostname -I`)
#   --port PORT         port rank 0 binds (default: any free port)
#   --bin DIR           folder of the coordinator and worker executables (.build/release)
#   --wait SECONDS      how long workers wait for rank 0's endpoint (default 120)
#   --worker-option X   pass X on to every worker (repeatable), e.g. CURVE keys
#   --parameter-servers R  a parameter service of R ranges (coordinator --parameter-servers R);
#                       every worker offers to serve (worker --serve auto: its host's address
#                       towards rank 0, a free port), so workers beyond R are spare servers
#   --processes K       every worker runs K compute processes (worker --processes K, K a power
#                       of two); without --shards after the `--`, the coordinator gets
#                       (ranks - 1) x K shards
# Without --data after the `--`, the coordinator reads this checkout's data/ ($MNIST_DIR).
# ZMQT_COORDINATOR=tcp://HOST:PORT in the environment skips the file: workers connect there.
# Across hosts, pass CURVE keys (see README) or --insecure after the `--`.
#
# The job's exit status is the coordinator's: a worker that dies is absorbed (its shards go
# to the others), and its rank exits as rank 0 does. If rank 0 fails, every other rank stops
# within a second or two with rank 0's error.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/.build/release
rendezvous="" run_id="" address="" port="*" wait_seconds=120 servers=0 processes=1
worker_options=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rendezvous) rendezvous=$2; shift 2 ;;
        --run-id) run_id=$2; shift 2 ;;
        --address) address=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --wait) wait_seconds=$2; shift 2 ;;
        --worker-option) worker_options+=("$2"); shift 2 ;;
        --parameter-servers) servers=$2; shift 2 ;;
        --processes) processes=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) break ;;
    esac
done

# Open MPI, MPICH/PMI, PMIx and Slurm each name the rank and size differently.
rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-${SLURM_PROCID:-}}}}
size=${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-${SLURM_NTASKS:-}}}
if [ -z "$rank" ] || [ -z "$size" ]; then
    echo "cluster.sh: no rank in the environment; start it with mpirun or srun (see --help)" >&2
    exit 2
fi
if [ "$size" -lt 2 ]; then
    echo "cluster.sh: needs at least 2 processes (a coordinator and a worker), got $size" >&2
    exit 2
fi
[[ "$wait_seconds" =~ ^[0-9]+$ ]] || { echo "cluster.sh: --wait takes whole seconds, got '$wait_seconds'" >&2; exit 2; }
# Every rank checks them alike, so that all stop with the same line.
. "$(dirname "$0")/service-options.sh"
check_service_options cluster.sh "$servers" "$processes" $((size - 1)) "$@"

# Every step of a Slurm allocation, and every mpirun, is a run of its own: the rendezvous
# names it, so that no rank ever takes an earlier run's endpoint for this one's.
if [ -z "$run_id" ]; then
    if [ -n "${SLURM_JOB_ID:-}" ]; then
        run_id=slurm-$SLURM_JOB_ID.${SLURM_STEP_ID:-0}
    elif [ -n "${OMPI_MCA_ess_base_jobid:-}" ]; then
        run_id=ompi-$OMPI_MCA_ess_base_jobid
    elif [ -n "${PMIX_NAMESPACE:-}" ]; then
        run_id=pmix-$PMIX_NAMESPACE
    elif [ -n "${PMI_PORT:-}" ]; then
        run_id=pmi-$PMI_PORT
    else
        echo "cluster.sh: this launcher names no job; pass --run-id ID (the same on every rank)" >&2
        exit 2
    fi
fi
run_id=${run_id//[^A-Za-z0-9_.-]/_}
rendezvous=${rendezvous:-$PWD/.zmqt-endpoint-$run_id}

# The rendezvous file, always replaced whole (written aside, then renamed):
#   zmqt-rendezvous 1 / run RUN / endpoint tcp://HOST:PORT        while rank 0 trains
#   zmqt-rendezvous 1 / run RUN / exit STATUS / error LINE        after rank 0 failed
# Rank 0 removes it when the coordinator succeeds.
publish() {
    local aside=$rendezvous.tmp-$run_id-$$
    # Private (every rank runs as the same user): it names where this run listens.
    (umask 077; printf '%s\n' "zmqt-rendezvous 1" "run $run_id" "$@" > "$aside")
    mv -f "$aside" "$rendezvous"
}

# Reads the rendezvous into seen_endpoint, seen_exit and seen_error; fails unless the file
# exists and belongs to this run. Anything malformed counts as not ours.
read_rendezvous() {
    seen_endpoint="" seen_exit="" seen_error=""
    local header="" run="" key value
    [ -f "$rendezvous" ] || return 1
    {
        IFS= read -r header || true
        read -r key run || true
        [ "$header" = "zmqt-rendezvous 1" ] && [ "$key" = run ] && [ "$run" = "$run_id" ] || return 1
        while read -r key value; do
            case "$key" in
                endpoint) [[ "$value" =~ ^tcp://[][A-Za-z0-9.:-]+:[0-9]+$ ]] && seen_endpoint=$value ;;
                exit) [[ "$value" =~ ^[1-9][0-9]{0,2}$ ]] && [ "$value" -le 255 ] && seen_exit=$value ;;
                error) seen_error=$(printf '%s' "$value" | tr -cd '[:print:]' | cut -c1-400) ;;
            esac
        done
    } < <(head -c 4096 "$rendezvous" 2>/dev/null | head -n 8)
    [ -n "$seen_endpoint" ] || [ -n "$seen_exit" ]
}

rank0_failed() {  # exits this rank with rank 0's status and error
    echo "cluster.sh: rank $rank: rank 0 failed (exit $seen_exit): ${seen_error:-see the output of rank 0}" >&2
    exit "$seen_exit"
}

if [ "$rank" = 0 ]; then
    if [ -z "$address" ]; then
        local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-${MPI_LOCALNRANKS:-}}
        if [ "${SLURM_NNODES:-1}" = 1 ] && { [ -z "$local_size" ] || [ "$local_size" = "$size" ]; }; then
            address=127.0.0.1
        else
            address=$(hostname -I | awk '{print $1}')
        fi
    fi
    coordinator_options=("$@" "${service_coordinator_args[@]}")
    data_given=false
    for option in "$@"; do case "$option" in --data|--data=*) data_given=true ;; esac; done
    $data_given || coordinator_options+=(--data "${MNIST_DIR:-$root/data}")
    private_endpoint=$rendezvous.endpoint-$run_id-$$
    errors=$(mktemp)
    rm -f "$rendezvous" "$private_endpoint"
    trap 'rm -f "$private_endpoint" "$errors" "$rendezvous.tmp-$run_id-$$" "$rendezvous.secret"' EXIT

    # Publishes the endpoint once the coordinator has bound it.
    ( until [ -s "$private_endpoint" ]; do sleep 0.1; done; publish "endpoint $(cat "$private_endpoint")" ) &
    publisher=$!
    # The coordinator's errors go to this rank's stderr and, for the other ranks, to the file.
    exec 4> >(tee "$errors" >&2)
    mirror=$!
    # Its stdout through a pipe: mpirun gives ranks a terminal, and progress lines redrawn
    # in place do not belong in a job's log.
    exec 6> >(cat)
    plain=$!
    # The run secret goes beside the rendezvous file (mode 0600, written before the endpoint).
    "$bin/coordinator" --workers $((size - 1)) --bind "tcp://$address:$port" --endpoint-file "$private_endpoint" \
        --secret-file "$rendezvous.secret" "${coordinator_options[@]}" 2>&4 >&6 &
    coordinator=$!
    # A launcher that stops the job may signal this rank only: pass it on.
    trap 'kill -TERM "$coordinator" 2>/dev/null || true' TERM INT HUP
    while :; do  # a signal interrupts wait; the coordinator's end ends the loop
        status=0
        wait "$coordinator" || status=$?
        kill -0 "$coordinator" 2>/dev/null || break
    done
    trap - TERM INT HUP
    exec 4>&- 6>&-
    wait "$mirror" "$plain" || true
    kill "$publisher" 2>/dev/null || true
    wait "$publisher" 2>/dev/null || true
    if [ "$status" = 0 ]; then
        rm -f "$rendezvous"
    else
        # Its last error line; else how it ended.
        last_error=$(grep -i 'error' "$errors" | tail -n 1 | tr -cd '[:print:]' | cut -c1-400) || true
        if [ -z "$last_error" ]; then
            last_error="the coordinator exited with status $status"
            [ "$status" -le 128 ] || last_error="the coordinator was stopped by signal $((status - 128))"
        fi
        publish "exit $status" "error $last_error"
    fi
    exit "$status"
fi

endpoint=${ZMQT_COORDINATOR:-}
if [ -z "$endpoint" ]; then
    waited=0
    until read_rendezvous; do
        if [ "$waited" -ge $((wait_seconds * 10)) ]; then
            echo "cluster.sh: rank $rank: no endpoint for run $run_id in $rendezvous after $wait_seconds s" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    [ -z "$seen_exit" ] || rank0_failed
    endpoint=$seen_endpoint
fi

# Not exec'd: this rank outlives its worker, so that a worker's death does not end the job.
# --parent-pid: should this script be killed outright, the worker goes too, instead of
# saying hello to whatever listens at the endpoint next.
secret=()
[ -n "${ZMQT_COORDINATOR:-}" ] || secret=(--secret-file "$rendezvous.secret")
"$bin/worker" --connect "$endpoint" --name "rank-$rank" --parent-pid $$ "${secret[@]}" "${service_worker_args[@]}" "${worker_options[@]}" &
worker=$!
trap 'kill "$worker" 2>/dev/null || true' EXIT
trap 'exit 143' TERM INT HUP
while kill -0 "$worker" 2>/dev/null; do
    if [ -z "${ZMQT_COORDINATOR:-}" ] && read_rendezvous && [ -n "$seen_exit" ]; then
        kill "$worker" 2>/dev/null || true
        wait "$worker" 2>/dev/null || true
        rank0_failed
    fi
    sleep 0.5
done
status=0
wait "$worker" 2>/dev/null || status=$?
[ "$status" = 0 ] && exit 0
[ -n "${ZMQT_COORDINATOR:-}" ] && exit "$status"

# The worker died or gave up; the coordinator carries on without it and decides the job.
how="exited with status $status"
[ "$status" -le 128 ] || how="was killed by signal $((status - 128))"
echo "cluster.sh: rank $rank: the worker $how; the job's outcome is the coordinator's" >&2
while read_rendezvous; do
    [ -z "$seen_exit" ] || rank0_failed
    sleep 0.5
done
echo "cluster.sh: rank $rank: the coordinator finished" >&2
exit 0
