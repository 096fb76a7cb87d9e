#!/usr/bin/env bash
# One command for a whole job under an MPI or Slurm launcher: every process takes its role
# from its rank (rank 0 is the coordinator, the others are workers).
#
#   mpirun -np 5 scripts/cluster.sh [OPTIONS] [-- COORDINATOR-OPTIONS]
#   srun --ntasks 5 scripts/cluster.sh [OPTIONS] [-- COORDINATOR-OPTIONS]
#
# Options:
#   --rendezvous FILE   where rank 0 writes its endpoint and the workers read it; must be
#                       on a filesystem every host sees (default: .zmqt-endpoint-JOB here)
#   --address ADDR      address rank 0 binds (default: 127.0.0.1 when every rank is on one
#                       host, else this host's first address from `hostname -I`)
#   --port PORT         port rank 0 binds (default: any free port)
#   --bin DIR           folder of the coordinator and worker executables (.build/release)
#   --worker-option X   pass X on to every worker (repeatable), e.g. CURVE keys
# ZMQT_COORDINATOR=tcp://HOST:PORT in the environment skips the file: workers connect there.
# Across hosts, pass CURVE keys (see README) or --insecure after the `--`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/.build/release
rendezvous="" address="" port="*"
worker_options=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rendezvous) rendezvous=$2; shift 2 ;;
        --address) address=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --worker-option) worker_options+=("$2"); shift 2 ;;
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
job=${SLURM_JOB_ID:-${OMPI_MCA_ess_base_jobid:-${PMIX_NAMESPACE:-default}}}
rendezvous=${rendezvous:-$PWD/.zmqt-endpoint-${job//[^A-Za-z0-9_.-]/_}}

if [ "$rank" = 0 ]; then
    if [ -z "$address" ]; then
        local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-${MPI_LOCALNRANKS:-}}
        if [ "${SLURM_NNODES:-1}" = 1 ] && { [ -z "$local_size" ] || [ "$local_size" = "$size" ]; }; then
            address=127.0.0.1
        else
            address=$(hostname -I | awk '{print $1}')
        fi
    fi
    rm -f "$rendezvous"
    trap 'rm -f "$rendezvous"' EXIT
    # The run secret goes beside the rendezvous file (mode 0600, written before the endpoint).
    "$bin/coordinator" --workers $((size - 1)) --bind "tcp://$address:$port" --endpoint-file "$rendezvous" \
        --secret-file "$rendezvous.secret" "$@"
else
    endpoint=${ZMQT_COORDINATOR:-}
    secret=()
    if [ -z "$endpoint" ]; then
        secret=(--secret-file "$rendezvous.secret")
        # The coordinator writes the file once it is bound; a stale file from an earlier
        # job is removed by rank 0 first, and the worker itself retries until it connects.
        for _ in $(seq 1200); do [ -s "$rendezvous" ] && break; sleep 0.1; done
        [ -s "$rendezvous" ] || { echo "cluster.sh: rank $rank: no endpoint in $rendezvous after 120 s" >&2; exit 1; }
        endpoint=$(cat "$rendezvous")
    fi
    exec "$bin/worker" --connect "$endpoint" --name "rank-$rank" "${secret[@]}" "${worker_options[@]}"
fi
