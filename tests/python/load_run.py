#!/usr/bin/python3
"""Loads a run folder the way the README shows: metrics.csv with pandas, summary.json, weights.npz with numpy.

    /usr/bin/python3 tests/python/load_run.py runs/quickstart-20261201-120000

CI runs it on a fresh quickstart run (Debian's python3-pandas and python3-numpy) and checks what it reads.
"""
import json
import sys

import numpy as np
import pandas as pd

run = sys.argv[1]
metrics = pd.read_csv(f"{run}/metrics.csv")            # one row per evaluation; nan / inf read as floats
summary = json.load(open(f"{run}/summary.json"))       # non-finite numbers are null
weights = np.load(f"{run}/weights.npz")                 # one float32 array per layer: layer0.weight (in x out), layer0.bias, ...

print(metrics[["step", "elapsed_s", "test_loss", "test_accuracy"]].tail(3).to_string(index=False))
print({name: weights[name].shape for name in weights.files})
print(summary["stop_reason"], summary["steps"], summary["seed"], summary["git_commit"])

# what CI checks: the last row is the summary's final loss, and the weights have the model's parameter count
assert abs(metrics["test_loss"].iloc[-1] - summary["final_test_loss"]) < 1e-9 * max(1.0, abs(summary["final_test_loss"]))
assert sum(weights[name].size for name in weights.files) == summary["parameters"]
assert all(weights[name].dtype == np.float32 for name in weights.files)
print("ok")
