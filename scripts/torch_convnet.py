"""PyTorch's side of scripts/convbench.sh: the same convnet, trained the same way on one thread.

conv 5x5x32 pad 2 + ReLU + max pool 2, conv 5x5x64 pad 2 + ReLU + max pool 2, dense 3136->128
ReLU, dense 128->10, cross-entropy on the logits, SGD with momentum 0.9; batches of MNIST's first
training samples. Times --steps steps after --warm-up-steps and prints one JSON line.
"""
import argparse, gzip, json, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(folder, count):
    """The first `count` training images (scaled to [0, 1]) and labels, from CSV or IDX(.gz)."""
    csv = os.path.join(folder, "mnist_train.csv")
    if os.path.exists(csv):
        with open(csv) as file:
            header = not file.readline().split(",")[0].strip().isdigit()
        rows = np.loadtxt(csv, delimiter=",", skiprows=int(header), max_rows=count, dtype=np.float32)
        return rows[:, 1:] / 255, rows[:, 0].astype(np.int64)
    def idx(name, header):
        for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
            if os.path.exists(path):
                raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
                return np.frombuffer(raw, dtype=np.uint8, offset=header)
        raise SystemExit(f"torch_convnet.py: no {name}[.gz] in {folder}")
    images = idx("train-images-idx3-ubyte", 16).reshape(-1, 784)[:count].astype(np.float32) / 255
    return images, idx("train-labels-idx1-ubyte", 8)[:count].astype(np.int64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warm-up-steps", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    total = args.warm_up_steps + args.steps
    images, labels = load(args.data, total * args.batch_size)
    if len(labels) < total * args.batch_size:
        raise SystemExit(f"torch_convnet.py: {total} steps need {total * args.batch_size} samples, {args.data} has {len(labels)}")
    x = torch.from_numpy(images).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=0.9)
    b = args.batch_size
    start = None
    for step in range(total):
        if step == args.warm_up_steps:
            start = time.perf_counter()
        batch = slice(step * b, (step + 1) * b)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps, "batch_size": b,
        "samples_per_second": args.steps * b / seconds, "final_loss": loss.item()}))


if __name__ == "__main__":
    main()
