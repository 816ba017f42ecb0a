#!/usr/bin/env bash
# On a GPU machine with no .NET SDK: runs the CUDA engine contract tests and the CUDA step
# benchmark beside PyTorch CUDA, same model, batch and precision.
#
# Prepare here (with the SDK), then run there with .gpu carried:
#   bash benchmarks/gpu/cuda_check.sh prepare     # builds Release, packs the .NET runtime into .gpu/
#   bash benchmarks/gpu/cuda_check.sh run [secs]  # on the GPU machine; prints PASS/FAIL lines and a table
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  prepare)
    dotnet build tests/ActorTrain.Compute.Tests -c Release -v q -nologo >/dev/null
    dotnet build benchmarks/ActorTrain.Benchmarks -c Release -v q -nologo >/dev/null
    mkdir -p .gpu
    root=$(dirname "$(readlink -f "$(command -v dotnet)")")
    [ -f .gpu/dotnet-runtime.tar.xz ] || tar -C "$root" -cJf .gpu/dotnet-runtime.tar.xz dotnet host shared/Microsoft.NETCore.App
    rm -rf .gpu/tests .gpu/bench
    cp -r tests/ActorTrain.Compute.Tests/bin/Release/net10.0 .gpu/tests
    cp -r benchmarks/ActorTrain.Benchmarks/bin/Release/net10.0 .gpu/bench
    # `steps` needs none of BenchmarkDotNet's diagnosers: keep the carried tree small.
    (cd .gpu/bench && rm -rf amd64 arm64 x86 runtimes/win Microsoft.CodeAnalysis*.dll Microsoft.Diagnostics.*.dll TraceReloggerLib.dll Dia2Lib.dll Gee.External.Capstone.dll Iced.dll)
    du -sh .gpu ;;
  run)
    secs=${2:-3}
    mkdir -p /tmp/dotnet && tar -C /tmp/dotnet -xJf .gpu/dotnet-runtime.tar.xz
    export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    dotnet .gpu/tests/ActorTrain.Compute.Tests.dll Cuda
    field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
    echo "| model | batch | precision | ILGPU CUDA ms/step | ILGPU GFLOP/s | PyTorch CUDA ms/step | ratio (PyTorch ms / ours) |"
    echo "|---|---:|---|---:|---:|---:|---:|"
    for model in softmax mlp; do for batch in 64 1024; do for precision in fp32 fp16; do
      ours=$(dotnet .gpu/bench/ActorTrain.Benchmarks.dll steps --engine ilgpu-cuda --model $model --batch $batch --precision $precision --seconds "$secs")
      torch=$(python3 benchmarks/pytorch/step_throughput.py --device cuda --model $model --batch $batch --precision $precision --seconds "$secs")
      a=$(echo "$ours" | field ms_per_step); b=$(echo "$torch" | field ms_per_step)
      echo "| $model | $batch | $precision | $a | $(echo "$ours" | field gflops) | $b | $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2fx", b/a}') |"
    done; done; done ;;
  *) echo "usage: cuda_check.sh prepare | run [seconds]" >&2; exit 2 ;;
esac
