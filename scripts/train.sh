#!/usr/bin/env bash
# The main job: installs what is missing, fetches MNIST, builds, and trains with a
# coordinator and local workers. Extra arguments go to the coordinator, e.g.
#   scripts/train.sh --spawn-workers 4 --epochs 20
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-mnist.sh
swift build -c release
[ $# -gt 0 ] || set -- --spawn-workers 2
exec .build/release/coordinator "$@"
