#!/usr/bin/env bash
# The main job: installs what is missing, fetches MNIST, builds, and trains with a
# coordinator and local workers (2 unless the arguments say --local, --spawn-workers N or
# --workers N). Extra arguments go to the coordinator, e.g.
#   scripts/train.sh --epochs 20 --save-model model.bin
#   scripts/train.sh --spawn-workers 4 --batch-size 512
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-mnist.sh
swift build -c release
# Unless told how to train, with 2 local workers. (Other subcommands pass through.)
case "${1:-}" in
    evaluate|predict|keygen|-h|--help) ;;
    *)
        if ! printf '%s\n' "$@" | grep -qE '^--(local|spawn-workers|workers)(=|$)'; then
            if [ "${1:-}" = train ]; then shift; set -- train --spawn-workers 2 "$@"; else set -- --spawn-workers 2 "$@"; fi
        fi ;;
esac
exec .build/release/coordinator "$@"
