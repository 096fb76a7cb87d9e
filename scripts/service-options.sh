# Sourced by launch.sh and cluster.sh: their --parameter-servers R and --processes K, checked
# in one place, and what each means for the coordinator and for every worker.
#
#   check_service_options LAUNCHER R K WORKERS [COORDINATOR-OPTION...]
# sets service_coordinator_args and service_worker_args, or exits 2 with a one-line error.
# R: 0 (no parameter service) or a positive integer up to WORKERS; every worker then offers
# to serve (worker --serve auto: this host's address towards the coordinator, a free port),
# so the workers beyond R are spares that take a lost server's range. K: a power of two from
# 1 to 256; without --shards among the coordinator's options, the coordinator gets
# WORKERS x K shards, so that each host computes an aligned block of K shards a step.
check_service_options() {
    local launcher=$1 servers=$2 processes=$3 workers=$4
    shift 4
    service_coordinator_args=() service_worker_args=()
    [[ "$servers" =~ ^(0|[1-9][0-9]{0,3})$ ]] || { echo "$launcher: --parameter-servers takes a positive integer (got '$servers')" >&2; exit 2; }
    [[ "$processes" =~ ^[1-9][0-9]{0,2}$ ]] && [ "$processes" -le 256 ] && [ $((processes & (processes - 1))) = 0 ] \
        || { echo "$launcher: --processes takes a power of two from 1 to 256 (got '$processes')" >&2; exit 2; }
    if [ "$servers" -gt "$workers" ]; then
        echo "$launcher: --parameter-servers $servers needs at least $servers workers (one serves each range), got $workers" >&2
        exit 2
    fi
    if [ "$servers" -gt 0 ]; then
        service_coordinator_args+=(--parameter-servers "$servers")
        service_worker_args+=(--serve auto)
    fi
    if [ "$processes" -gt 1 ]; then
        service_worker_args+=(--processes "$processes")
        local option shards_given=false
        for option in "$@"; do case "$option" in --shards|--shards=*) shards_given=true ;; esac; done
        $shards_given || service_coordinator_args+=(--shards $((workers * processes)))
    fi
}
