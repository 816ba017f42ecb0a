#!/usr/bin/env python3
"""Reference optimizer trajectories from torch.optim, for ActorTrain.Core.Tests.

A fixed softmax-regression problem (4 features, 3 classes, 12 samples; data and starting weights
drawn from torch's seeded generator and written out, so C# uses the very same numbers) is trained
for 25 full-batch steps with each optimizer; the weights after every step are recorded in the
model's flat layout (W row-major 4x3, then b). Regenerate with

    /usr/bin/python3 tests/reference/torch_optimizer_trajectories.py

(Debian: apt-get install python3-torch). The output file is committed.
"""
import json
import os

import torch

torch.manual_seed(20261125)
torch.set_num_threads(1)
N, D, C, STEPS = 12, 4, 3, 25
x = torch.randn(N, D, dtype=torch.float32)
y = torch.randint(0, C, (N,))
w0 = (0.1 * torch.randn(D * C + C)).to(torch.float32)

CASES = {
    "sgd": (torch.optim.SGD, dict(lr=0.5)),
    "momentum": (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    "nesterov": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "momentum-l2": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.01, alpha=0.99)),
    "adam": (torch.optim.Adam, dict(lr=0.05, betas=(0.9, 0.999))),
    "adam-l2": (torch.optim.Adam, dict(lr=0.05, weight_decay=0.01)),
    "adamw": (torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
}


def run(cls, kwargs):
    w = w0.clone().requires_grad_(True)
    opt = cls([w], **kwargs)
    traj = []
    for _ in range(STEPS):
        opt.zero_grad()
        W = w[: D * C].view(D, C)
        b = w[D * C:]
        loss = torch.nn.functional.cross_entropy(x @ W + b, y)
        loss.backward()
        opt.step()
        traj.append(w.detach().tolist())
    return traj


out = {
    "torch": torch.__version__,
    "features": D, "classes": C,
    "x": x.flatten().tolist(), "y": y.tolist(), "w0": w0.tolist(),
    "cases": {name: {"kind": cls.__name__, "hyper": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
                     "trajectory": run(cls, kw)} for name, (cls, kw) in CASES.items()},
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ActorTrain.Core.Tests", "Reference", "optimizer_trajectories.json")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {os.path.normpath(path)} ({len(CASES)} optimizers x {STEPS} steps, torch {torch.__version__})")
