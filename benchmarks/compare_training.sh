#!/usr/bin/env bash
# Training side by side with PyTorch on Fashion-MNIST (CPU, 2 threads in total): one ActorTrain
# worker against a plain PyTorch loop, and 2 / 4 in-process workers (BSP, wall clock, one shard)
# against DistributedDataParallel with the gloo backend in 2 / 4 processes, on an ideal network
# (no injected latency or bandwidth limit: the comparison is of the machinery). Same model (MLP
# 784-256-128-10), data, normalisation, Adam 0.001, batch 64 per worker; until test loss 0.40.
#
#   bash benchmarks/compare_training.sh
#
# Needs Debian's python3-torch, libopenblas0-pthread and dataset-fashion-mnist. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
$py -c 'import torch' 2>/dev/null || { echo "python3-torch is missing: apt-get install python3-torch libopenblas0-pthread" >&2; exit 2; }
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { echo "apt-get install dataset-fashion-mnist" >&2; exit 2; }
dotnet build src/ActorTrain.Cli -c Release -v q -nologo >/dev/null
# torch parallelises with its own intra-op threads; a second OpenBLAS pool on the same 2 cores oversubscribes
export OPENBLAS_NUM_THREADS=1
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
echo "| workers | PyTorch | PyTorch samples/s | PyTorch s to loss 0.40 (steps) | ActorTrain samples/s | ActorTrain s to loss 0.40 (steps) | ratio, samples/s |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for w in 1 2 4; do
  torch=$($py benchmarks/pytorch/train_fashion.py --workers $w --threads 2 --target-loss 0.40 2>/dev/null | tail -1)
  dotnet src/ActorTrain.Cli/bin/Release/net10.0/actortrain.dll run hocon/experiments/fashion-mnist.conf --out "$out" \
    --set simulation.clock=wall --set topology.workers=$w --set topology.shards=1 --exporter none --set training.target-accuracy=0 \
    --set training.target-loss=0.40 --set training.max-steps=3000 --set output.plots=off --set compute.engine=simd \
    --set network.latency="\"constant(0us)\"" --set network.bandwidth=unlimited >/dev/null
  summary=$(ls -d "$out"/fashion-mnist-*/ | tail -1)summary.json
  ours=$($py -c "import json; s=json.load(open('$summary')); print(s['samples_per_second'], s['elapsed_seconds'], s['steps'])")
  read -r sps secs steps <<<"$ours"
  kind=$([ $w = 1 ] && echo "training loop" || echo "DDP gloo, $w processes")
  echo "| $w | $kind | $(echo "$torch" | field samples_per_s) | $(echo "$torch" | field time_to_target_s) ($(echo "$torch" | field steps)) | $(printf '%.0f' "$sps") | $(printf '%.2f' "$secs") ($steps) | $(awk -v a="$sps" -v b="$(echo "$torch" | field samples_per_s)" 'BEGIN{printf "%.2fx", a/b}') |"
done
