#!/usr/bin/env bash
# Engine step throughput side by side with PyTorch CPU: same model, batch, data shapes, threads.
#
#   bash benchmarks/compare_pytorch.sh [seconds-per-measurement]
#
# Needs Debian's python3-torch and, for a fair baseline, a real BLAS behind it: Debian's torch is
# built with BLAS_INFO=generic and uses whatever libblas.so.3 points at, which is the slow
# reference BLAS unless libopenblas0-pthread is installed (this script installs it when run as
# root). PyTorch runs in two thread layouts (torch intra-op 2 x OpenBLAS 1, torch 1 x OpenBLAS 2)
# and the faster one is the baseline. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
py=/usr/bin/python3
if ! $py -c 'import torch' 2>/dev/null; then
  echo "python3-torch is missing: apt-get install python3-torch" >&2; exit 2
fi
if [ "$(id -u)" = 0 ] && ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null
fi
dotnet build benchmarks/ActorTrain.Benchmarks -c Release -v q -nologo >/dev/null
bench="dotnet benchmarks/ActorTrain.Benchmarks/bin/Release/net10.0/ActorTrain.Benchmarks.dll"
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

echo "| model | ActorTrain engine | precision | ms/step | samples/s | GFLOP/s | PyTorch FP32 ms/step | ratio (samples/s, ours / PyTorch) |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
for model in softmax mlp; do
  t1=$(OPENBLAS_NUM_THREADS=1 $py benchmarks/pytorch/step_throughput.py --model $model --threads 2 --seconds "$secs" | field ms_per_step)
  t2=$(OPENBLAS_NUM_THREADS=2 $py benchmarks/pytorch/step_throughput.py --model $model --threads 1 --seconds "$secs" | field ms_per_step)
  torch_ms=$(printf '%s\n%s\n' "$t1" "$t2" | sort -g | head -1)
  for precision in fp32 fp16; do
    line=$($bench steps --engine simd --model $model --precision $precision --seconds "$secs")
    ms=$(echo "$line" | field ms_per_step)
    echo "| $model | simd | $precision | $ms | $(echo "$line" | field samples_per_s) | $(echo "$line" | field gflops) | $torch_ms | $(awk -v a="$torch_ms" -v b="$ms" 'BEGIN{printf "%.2fx", a/b}') |"
  done
done
