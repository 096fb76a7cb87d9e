#!/usr/bin/env python3
"""PyTorch DDP (gloo, CPU) training the project's networks on MNIST: the reference that
scripts/netsim.sh runs beside the project on the same simulated cluster.

One process per rank, started by hand or by a launcher; the rendezvous comes from the
options or from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):

  python3 scripts/ddp_mnist.py --rank R --world-size N --master 10.203.0.11:29500 \\
      [--model dense128,dense10] [--batch-size 512 | --batch-size-per-worker B] [--steps 150] \\
      [--precision fp32|fp16] [--data data] [--cache DIR] [--summary PATH]

Each step trains on one global batch split in contiguous shards over the ranks, cut as the
coordinator cuts its shards (rank r takes [r*B/N, (r+1)*B/N)); every rank's loss is
its shard's summed loss over the global batch times N, so that DDP's average of the gradients
is the gradient of the global batch's mean loss, whatever the split. SGD with momentum 0.9 and
lr = lr0 / (1 + decay * step), lr0 0.2 and decay 5e-4 as the coordinator's defaults (torch's
form of momentum, v = m*v + g and p -= lr*v, which equals the coordinator's v = m*v - lr*g and
p += v while lr stays the same; lr moves by under 8% in 150 steps). Pixels are
scaled to [0, 1] in the step, as a worker does with its task's pixels. --precision fp16 sends
gradients as fp16 (DDP's fp16_compress_hook), as the project's --wire-precision fp16 does.

Rank 0 prints samples/s (global batch times steps over the slowest rank's wall time of the
steps, the first step included, as the coordinator's summary counts it) and the global loss of
the first and last steps, and writes them as JSON with --summary. Needs torch and numpy.
"""
import argparse
import datetime
import json
import os
import re
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


def parse_model(spec, classes=10):
    """The coordinator's --model spelling as torch layers: convKxC (K x K, stride 1, padding
    K/2, ReLU), poolP (P x P max pooling), denseN (ReLU, the last one the class scores),
    flatten; a dense layer after an image flattens it first, as the coordinator does."""
    layers, channels, image = [], 1, True
    height = width = 28
    inputs = 784
    tokens = [token.strip().lower() for token in spec.split(",")]
    for index, token in enumerate(tokens):
        last = index == len(tokens) - 1
        if match := re.fullmatch(r"conv(\d+)x(\d+)", token):
            kernel, out = int(match[1]), int(match[2])
            if not image:
                sys.exit(f"ddp_mnist.py: {token}: a convolution needs an image, not a vector")
            layers += [nn.Conv2d(channels, out, kernel, padding=kernel // 2), nn.ReLU()]
            channels = out
            height, width = height + 2 * (kernel // 2) - kernel + 1, width + 2 * (kernel // 2) - kernel + 1
        elif match := re.fullmatch(r"pool(\d+)", token):
            size = int(match[1])
            layers.append(nn.MaxPool2d(size))
            height, width = height // size, width // size
        elif match := re.fullmatch(r"dense(\d+)", token):
            if image:
                layers.append(nn.Flatten())
                inputs, image = channels * height * width, False
            units = int(match[1])
            if last and units != classes:
                sys.exit(f"ddp_mnist.py: {token}: the last layer needs {classes} units")
            layers.append(nn.Linear(inputs, units))
            if not last:
                layers.append(nn.ReLU())
            inputs = units
        elif token == "flatten":
            layers.append(nn.Flatten())
            inputs, image = channels * height * width, False
        else:
            sys.exit(f"ddp_mnist.py: unknown layer '{token}' (use convKxC, poolP, denseN or flatten)")
        if image and (height < 1 or width < 1):
            sys.exit(f"ddp_mnist.py: {token}: the image shrinks to nothing")
    if image or not tokens[-1].startswith("dense"):
        sys.exit("ddp_mnist.py: the last layer must be dense (denseN, N the class count)")
    convolutional = any(isinstance(layer, nn.Conv2d) for layer in layers)
    if not convolutional and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    return nn.Sequential(*layers), convolutional


def load_training_set(folder, cache):
    """mnist_train.csv (header line, label then 784 pixels per row) as uint8 arrays; parsed
    once into CACHE/mnist_train.npy when a cache folder is given (written atomically, so that
    ranks starting together may race for it)."""
    source = os.path.join(folder, "mnist_train.csv")
    cached = os.path.join(cache, "mnist_train.npy") if cache else None
    if cached and os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(source):
        rows = np.load(cached)
    else:
        try:
            rows = np.loadtxt(source, delimiter=",", skiprows=1, dtype=np.uint8)
        except (OSError, ValueError) as error:
            sys.exit(f"ddp_mnist.py: {source}: {error}")
        if cached:
            os.makedirs(cache, exist_ok=True)
            temporary = f"{cached}.{os.getpid()}.tmp.npy"
            np.save(temporary, rows)
            os.replace(temporary, cached)
    if rows.ndim != 2 or rows.shape[1] != 785:
        sys.exit(f"ddp_mnist.py: {source}: expected rows of a label and 784 pixels, got shape {rows.shape}")
    return np.ascontiguousarray(rows[:, 1:]), rows[:, 0].astype(np.int64)


def shard(batch, ranks, rank):
    """This rank's [start, end) in a global batch, as the coordinator's shardRange cuts it."""
    return rank * batch // ranks, (rank + 1) * batch // ranks


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)))
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    parser.add_argument("--master", default=f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}",
                        help="rank 0's address and a free port on it (default MASTER_ADDR:MASTER_PORT)")
    parser.add_argument("--model", default="dense128,dense10", help="the coordinator's --model spelling (default: the MLP 784-128-10)")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=512, help="samples per global batch")
    batch.add_argument("--batch-size-per-worker", type=int, help="global batch = this times --world-size (weak scaling)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--learning-rate", type=float, default=0.2)
    parser.add_argument("--decay", type=float, default=5e-4)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="gradients on the wire")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (the project's workers use one)")
    parser.add_argument("--data", default="data", help="folder with mnist_train.csv")
    parser.add_argument("--cache", help="folder for the parsed training set (.npy), shared by the ranks")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the other ranks (importing torch can take a minute on a loaded machine)")
    parser.add_argument("--summary", help="rank 0 writes its figures here as JSON")
    args = parser.parse_args()
    if not 1 <= args.world_size <= 4096 or not 0 <= args.rank < args.world_size:
        parser.error(f"need 0 <= --rank < --world-size <= 4096 (got rank {args.rank}, world size {args.world_size})")
    if args.batch_size_per_worker is not None:
        if args.batch_size_per_worker < 1:
            parser.error("--batch-size-per-worker must be positive")
        args.batch_size = args.batch_size_per_worker * args.world_size
    if args.batch_size < args.world_size or args.steps < 1 or args.threads < 1:
        parser.error("need --batch-size >= --world-size, --steps >= 1 and --threads >= 1")
    return args


def main():
    args = arguments()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, convolutional = parse_model(args.model)
    parameters = sum(p.numel() for p in model.parameters())
    pixels, labels = load_training_set(args.data, args.cache)

    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank, world_size=args.world_size,
                            timeout=datetime.timedelta(seconds=args.timeout))
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's initial weights
    if args.precision == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.learning_rate, momentum=args.momentum)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + args.decay * step))
    loss_function = nn.CrossEntropyLoss(reduction="sum")
    start, end = shard(args.batch_size, args.world_size, args.rank)
    scale = args.world_size / args.batch_size
    order, epoch_position = np.random.default_rng(args.seed).permutation(len(labels)), 0
    losses, ends = [], []

    dist.barrier()
    began = time.perf_counter()
    for step in range(args.steps):
        if epoch_position + args.batch_size > len(order):  # a new epoch, as the coordinator drops the remainder
            order, epoch_position = np.random.default_rng(args.seed + step).permutation(len(labels)), 0
        rows = order[epoch_position + start:epoch_position + end]
        epoch_position += args.batch_size
        inputs = torch.from_numpy(pixels[rows]).float().div_(255)
        if convolutional:
            inputs = inputs.view(-1, 1, 28, 28)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(ddp(inputs), torch.from_numpy(labels[rows])) * scale
        loss.backward()
        optimizer.step()
        schedule.step()
        if step == 0 or step == args.steps - 1:
            losses.append(loss.detach())
        ends.append(time.perf_counter())
    elapsed = torch.tensor([time.perf_counter() - began], dtype=torch.float64)
    step_seconds = np.diff([began] + ends)

    # After the timing: the slowest rank's time, and the global mean loss (each rank's
    # value is its share of it, already divided by the batch and times N).
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    global_losses = torch.stack(losses).double()
    dist.all_reduce(global_losses)
    global_losses /= args.world_size
    dist.destroy_process_group()
    if args.rank != 0:
        return
    seconds = elapsed.item()
    result = dict(system="pytorch-ddp", backend="gloo", torch=torch.__version__, workers=args.world_size,
                  model=args.model, parameters=parameters, batch_size=args.batch_size, steps=args.steps,
                  precision=args.precision, threads_per_rank=args.threads, train_seconds=seconds,
                  samples_per_second=args.batch_size * args.steps / seconds,
                  first_step_seconds=float(step_seconds[0]), median_step_seconds=float(np.median(step_seconds)),
                  first_loss=global_losses[0].item(), last_loss=global_losses[-1].item())
    print(f"ddp: {args.world_size} rank(s), {args.model} ({parameters} parameters), batch {args.batch_size}, "
          f"{args.steps} steps, {args.precision}: {result['samples_per_second']:.0f} samples/s "
          f"(rank 0's first step {1000 * step_seconds[0]:.1f} ms, median {1000 * np.median(step_seconds):.2f} ms), "
          f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}")
    if args.summary:
        with open(args.summary, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
