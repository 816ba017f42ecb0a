#!/usr/bin/env python3
"""PyTorch side of the training comparison on Fashion-MNIST (CPU, Debian's python3-torch).

Same model (MLP 784-256-128-10, ReLU), same data and normalisation as ActorTrain's
hocon/experiments/fashion-mnist.conf (pixels / 255, standardised with the training set's global
mean and std), Adam at 0.001, batch 64 per worker, evaluation on the 10,000 test images every 100
steps (not timed), stop at a target test loss or max steps.

    /usr/bin/python3 benchmarks/pytorch/train_fashion.py --workers 1 --threads 2 --target-loss 0.40
    /usr/bin/python3 benchmarks/pytorch/train_fashion.py --workers 4 --threads 2   # DDP, gloo, 4 processes

--workers 1 is a plain training loop; more runs DistributedDataParallel with the gloo backend in
that many local processes (each process 64 samples per step, threads split between them).
Prints one line of key=value pairs.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

p = argparse.ArgumentParser()
p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--workers", type=int, default=1)
p.add_argument("--threads", type=int, default=2, help="CPU threads in total, split between the processes")
p.add_argument("--batch", type=int, default=64)
p.add_argument("--lr", type=float, default=0.001)
p.add_argument("--max-steps", type=int, default=3000)
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--target-loss", type=float, default=0.0)
p.add_argument("--port", type=int, default=29517)
a = p.parse_args()


def idx(name):
    with gzip.open(os.path.join(a.data, name)) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load():
    x = idx("train-images-idx3-ubyte.gz").reshape(60000, 784).astype(np.float32) / 255
    t = idx("t10k-images-idx3-ubyte.gz").reshape(10000, 784).astype(np.float32) / 255
    mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64)
    x = (x - mean) / std
    t = (t - mean) / std
    y = idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    ty = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(t), torch.from_numpy(ty)


def net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def run(rank, world, result):
    torch.set_num_threads(max(1, a.threads // world))
    if world > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(a.port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y, tx, ty = load()
    # each process its own disjoint shard of the training set, reshuffled every epoch (seeded)
    part = torch.arange(rank, x.shape[0], world)
    model = net()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(100 + rank)
    order, pos = part[torch.randperm(len(part), generator=g)], 0
    trained, reached, test_loss, steps = 0.0, None, float("nan"), 0
    for step in range(1, a.max_steps + 1):
        if pos + a.batch > len(order):
            order, pos = part[torch.randperm(len(part), generator=g)], 0
        idx_ = order[pos:pos + a.batch]
        pos += a.batch
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx_]), y[idx_])
        loss.backward()
        opt.step()
        trained += time.perf_counter() - t0
        steps = step
        if step % a.eval_every == 0:
            with torch.no_grad():
                test_loss = loss_fn(model(tx), ty).item()
            if a.target_loss > 0 and test_loss <= a.target_loss:
                reached = trained
                break
    if rank == 0:
        result.update(steps=steps, trained=trained, test_loss=test_loss, reached=reached)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    if a.workers == 1:
        out = {}
        run(0, 1, out)
    else:
        manager = mp.Manager()
        out = manager.dict()
        mp.spawn(run, args=(a.workers, out), nprocs=a.workers, join=True)
        out = dict(out)
    samples = out["steps"] * a.batch * a.workers
    print(f"impl=pytorch-{torch.__version__} workers={a.workers} threads={a.threads} steps={out['steps']} "
          f"samples_per_s={samples / out['trained']:.0f} train_s={out['trained']:.3f} "
          f"time_to_target_s={out['reached'] if out['reached'] is None else round(out['reached'], 3)} final_test_loss={out['test_loss']:.4f}")
