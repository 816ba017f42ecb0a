#!/usr/bin/env bash
# How long a cluster run waits for a lost worker node, per sync policy (wall clock).
# Runs `actortrain run --nodes 4` (coordinator + 1 ps + 2 worker nodes, 4 workers, 1 ms compute)
# once without a fault and once with one worker node killed (SIGKILL) 6 s after start, and prints
# the run's elapsed time, lost_workers, and each worker's total wait (survivors' wait grows by
# the time the barrier or staleness bound waited for the node's removal).
# Usage: benchmarks/cluster_faults.sh [ssp bsp asp]   (build Release first)
set -euo pipefail
cd "$(dirname "$0")/.."
at=(dotnet src/ActorTrain.Cli/bin/Release/net10.0/actortrain.dll)
out=$(mktemp -d)
for policy in "${@:-ssp bsp asp}"; do
  for mode in base kill; do
    dir="$out/$policy-$mode"
    "${at[@]}" run --nodes 4 --set simulation.clock=wall --set "sync.policy=$policy" --set training.max-steps=4000 \
      --set simulation.compute-time=1ms --set output.plots=off --set telemetry.exporter=none --out "$dir" > "$dir.log" 2>&1 &
    main=$!
    if [ "$mode" = kill ]; then sleep 6; kill -9 "$(pgrep -f -- '--role worker' | head -1)"; fi
    wait "$main" || true
    python3 - "$dir" "$policy" "$mode" <<'PY'
import glob, json, sys
files = glob.glob(sys.argv[1] + "/*/summary.json")
if not files: print(sys.argv[2], sys.argv[3], "no summary"); sys.exit()
s = json.load(open(files[0]))
print(f'{sys.argv[2]:4} {sys.argv[3]:4} elapsed {s["elapsed_seconds"]:6.2f} s  lost {s.get("lost_workers")}  '
      f'wait per worker {[round(w["wait_seconds"], 2) for w in s["worker_times"]]}  steps {[w["steps"] for w in s["worker_times"]]}')
PY
  done
done
rm -rf "$out"
