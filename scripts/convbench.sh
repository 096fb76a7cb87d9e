#!/usr/bin/env bash
# The convnet's single-process training step against PyTorch's, side by side: this project's
# `bench --model` (the trainer's own step, one shard, OPENBLAS one thread) and the same network
# in PyTorch (scripts/torch_convnet.py, torch.set_num_threads(1)), on MNIST's first training
# samples, batch 128, SGD with momentum. The two run in alternate rounds, A/B/A/B, each round a
# fresh process that warms up and then times --steps steps, so the machine's drift falls on
# both alike. Prints each round, the median samples/s of each, their ratio (median of the
# rounds' ratios too), and each one's fraction of the sgemm roofline that `bench` measures for
# exactly the step's products (the FLOPs per sample are the network's, the same for both).
#
#   scripts/convbench.sh [--rounds R] [--steps N] [--batch-size B] [--model SPEC]
#                        [--venv PATH] [--data DIR] [--json PATH]
#
# PyTorch comes from a virtual environment: --venv PATH or $CONVBENCH_VENV if set, else
# .build/venv, created on first use (python3 -m venv, pip install torch numpy: a large
# download). --model changes this project's side only; PyTorch's network is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
steps=20
batch=128
model=conv5x32,pool2,conv5x64,pool2,dense128,dense10
venv=${CONVBENCH_VENV:-.build/venv}
data=data
json=.build/bench/convbench.json
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --venv) venv=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "convbench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [ "$data" = data ]; then
    scripts/setup.sh
    scripts/fetch-mnist.sh >/dev/null
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "convbench.sh: installing torch and numpy into $venv" >&2
    if ! python3 -c "import ensurepip, venv" 2>/dev/null; then  # Debian splits venv out
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy
fi
swift build -c release --product bench >/dev/null
mkdir -p .build/bench "$(dirname "$json")"
gcc -O2 -shared -fPIC -o .build/bench/malloc-counter.so scripts/malloc-counter.c
out=.build/bench/convbench
rm -rf "$out" && mkdir -p "$out"

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for round in $(seq "$rounds"); do
    LD_PRELOAD=$PWD/.build/bench/malloc-counter.so .build/release/bench --data "$data" --model "$model" \
        --batch-size "$batch" --steps "$steps" --json "$out/swift-$round.json" > "$out/swift-$round.txt"
    "$venv/bin/python" scripts/torch_convnet.py --data "$data" --batch-size "$batch" --steps "$steps" \
        > "$out/torch-$round.json"
    python3 -c "import json,sys; s=json.load(open(sys.argv[1])); t=json.load(open(sys.argv[2])); print(f'round {sys.argv[3]}: this project {s[\"samples_per_second\"]:.0f} samples/s, PyTorch {t[\"samples_per_second\"]:.0f} samples/s')" \
        "$out/swift-$round.json" "$out/torch-$round.json" "$round"
done
cat "$out/swift-1.txt"

python3 - "$out" "$rounds" "$json" <<'PY'
import json, statistics, sys
out, rounds, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
swift = [json.load(open(f"{out}/swift-{r}.json")) for r in range(1, rounds + 1)]
torch = [json.load(open(f"{out}/torch-{r}.json")) for r in range(1, rounds + 1)]
median = statistics.median
ours = median(s["samples_per_second"] for s in swift)
theirs = median(t["samples_per_second"] for t in torch)
ratios = sorted(s["samples_per_second"] / t["samples_per_second"] for s, t in zip(swift, torch))
roofline = median(s["roofline_gflops"] for s in swift)
flops = swift[0]["flops_per_sample"]
side_by_side = [s["interleaved"]["median_fraction"] for s in swift if s.get("interleaved")]
result = {
    "model": swift[0]["model"], "batch_size": swift[0]["batch_size"], "flops_per_sample": flops,
    "torch_version": torch[0]["torch"], "torch_parameters": torch[0]["parameters"],
    "parameters": swift[0]["parameters"], "rounds": rounds, "steps_per_round": swift[0]["steps"],
    "samples_per_second": {"this_project": ours, "pytorch": theirs},
    "ratio_of_medians": ours / theirs, "round_ratios": ratios,
    "roofline_gflops_median": roofline,
    "roofline_fraction": {"this_project": ours * flops / 1e9 / roofline, "pytorch": theirs * flops / 1e9 / roofline},
    "this_project_side_by_side_fraction_median": median(side_by_side) if side_by_side else None,
    "allocations_per_step": [s.get("allocations_per_step") for s in swift],
}
print(f"\n{result['model']}, batch {result['batch_size']}, one thread, {rounds} rounds of {result['steps_per_round']} steps each:")
def each(runs):
    return ", ".join(f"{run['samples_per_second']:.0f}" for run in runs)
print(f"  this project  {ours:8.0f} samples/s (median; rounds {each(swift)})")
print(f"  PyTorch {torch[0]['torch']:<6}{theirs:8.0f} samples/s (median; rounds {each(torch)})")
print(f"  ratio {ours / theirs:.2f}x (round by round: {', '.join(f'{r:.2f}' for r in ratios)})")
print(f"  sgemm roofline {roofline:.1f} GFLOP/s (median of the rounds), {flops / 1e6:.2f} MFLOP per sample: "
      f"this project {result['roofline_fraction']['this_project'] * 100:.1f}%, PyTorch {result['roofline_fraction']['pytorch'] * 100:.1f}%"
      + (f"; this project side by side with the roofline {result['this_project_side_by_side_fraction_median'] * 100:.1f}%" if side_by_side else ""))
print(f"  allocations per step (this project): {', '.join(str(a) for a in result['allocations_per_step'])}")
json.dump(result, open(path, "w"), indent=2, sort_keys=True)
print(f"figures written to {path}")
PY
