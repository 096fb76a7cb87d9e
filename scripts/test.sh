#!/usr/bin/env bash
# The test command: installs what is missing, fetches MNIST, builds, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-mnist.sh
swift build
swift test --disable-swift-testing
