#!/usr/bin/env python3
"""PyTorch CPU side of the engine comparison: forward+backward steps per second.

Same shapes as ActorTrain's `steps` benchmark: softmax regression 784->10 or an MLP 784-256-128-10
(ReLU), batch 64, mean cross-entropy, gradients of every parameter (no optimizer step).

    /usr/bin/python3 benchmarks/pytorch/step_throughput.py --model mlp --threads 2 --seconds 3

Prints one line of key=value pairs, like the C# side. Debian's python3-torch is a CPU build; its
FP16 matmul on CPU is not a fast path, so the comparison baseline is PyTorch FP32.
"""
import argparse
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--model", default="mlp", choices=["softmax", "mlp"])
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seconds", type=float, default=3.0)
p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
p.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronise the device)")
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(7)
dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
sizes = [784, 10] if a.model == "softmax" else [784, 256, 128, 10]
layers = []
for i in range(len(sizes) - 1):
    layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
    if i < len(sizes) - 2:
        layers.append(torch.nn.ReLU())
dev = torch.device(a.device)
net = torch.nn.Sequential(*layers).to(dev, dtype)
x = torch.randn(a.batch, 784, dtype=dtype, device=dev)
y = torch.randint(0, 10, (a.batch,), device=dev)
loss_fn = torch.nn.CrossEntropyLoss()


def step():
    for prm in net.parameters():
        prm.grad = None
    loss = loss_fn(net(x).float(), y)
    loss.backward()
    return loss


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


t0 = time.perf_counter()
while time.perf_counter() - t0 < min(1.0, a.seconds / 3):
    step()
sync()
n = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < a.seconds:
    step()
    n += 1
sync()
elapsed = time.perf_counter() - t0
mac = sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
flops_per_sample = sum((4 if i == 0 else 6) * sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
sps = n / elapsed
print(f"impl=pytorch-{torch.__version__} engine=torch-{a.device} model={a.model} precision={a.precision} batch={a.batch} "
      f"steps_per_s={sps:.1f} samples_per_s={sps * a.batch:.0f} gflops={sps * flops_per_sample * a.batch / 1e9:.2f} "
      f"ms_per_step={1000 / sps:.3f} threads={a.threads}")
