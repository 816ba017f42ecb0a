#!/usr/bin/env bash
# Browser check of the telemetry path end to end: start the Aspire dashboard (actortrain dashboard),
# send it a quickstart run over OTLP/HTTP, and have headless chromium confirm that the dashboard lists
# the run's trace and shows a step-time P50 equal to the run's own metrics (screenshots in docs/ when
# run with --keep-screenshots).
#
#   bash tests/browser/dashboard-check.sh [--keep-screenshots]
#   ACTORTRAIN=/path/to/installed/actortrain bash tests/browser/dashboard-check.sh   # the installed .NET tool
#
# Needs Debian's chromium and node/npm (.ci/run installs them when run as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
keep=${1:-}
ui=18888; otlp=4318; grpc=4317
out=$(mktemp -d)
trap 'kill ${dash:-0} 2>/dev/null || true; rm -rf "$out"' EXIT
command -v chromium >/dev/null || { echo "chromium is missing: apt-get install chromium" >&2; exit 2; }
(cd tests/browser && npm ci --no-audit --no-fund --silent)
if [ -n "${ACTORTRAIN:-}" ]; then
  cli="$ACTORTRAIN"
  echo "using $cli"
else
  dotnet build src/ActorTrain.Cli -c Release -v q -nologo >/dev/null
  cli="dotnet src/ActorTrain.Cli/bin/Release/net10.0/actortrain.dll"
fi
$cli dashboard --port $ui --otlp-port $otlp --grpc-port $grpc > "$out/dashboard.log" 2>&1 &
dash=$!
for _ in $(seq 1 120); do grep -q "^Aspire dashboard" "$out/dashboard.log" && break; sleep 0.5; done
grep -q "^Aspire dashboard" "$out/dashboard.log" || { cat "$out/dashboard.log" >&2; echo "the dashboard did not start" >&2; exit 1; }
# to the dashboard and to the run folder at once: the folder's metrics.jsonl says what the dashboard must show
$cli run quickstart --out "$out/runs" --otlp-endpoint "http://127.0.0.1:$otlp" --exporter "[file, otlp]" \
  --set training.max-steps=200 --set output.plots=off > "$out/run.log"
# the median step's bucket bound over every worker (the dashboard's P50 of a histogram is a bucket bound)
p50=$(python3 - "$out"/runs/*/metrics.jsonl <<'PY'
import json, sys
counts, bounds = None, None
for line in open(sys.argv[1]):
    for r in json.loads(line)["resourceMetrics"]:
        for s in r["scopeMetrics"]:
            for m in s["metrics"]:
                if m["name"] != "actortrain.step.duration": continue
                for p in m["histogram"]["dataPoints"]:
                    c = [int(x) for x in p["bucketCounts"]]
                    counts = c if counts is None else [a + b for a, b in zip(counts, c)]
                    bounds = p["explicitBounds"]
total, seen = sum(counts), 0
for i, c in enumerate(counts):
    seen += c
    if 2 * seen >= total:
        print(bounds[i]); break
PY
)
echo "run's metrics: step-time P50 bucket bound $p50 s"
# the API confirms the trace arrived before the browser looks for it
spans=$(curl -s "http://127.0.0.1:$ui/api/telemetry/traces" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]
print(sum(len(s["spans"]) for r in d["resourceSpans"] for s in r["scopeSpans"] if any(sp["name"] == "run" for sp in s["spans"]) or True))')
echo "dashboard API: $spans spans"
[ "$spans" -gt 0 ]
node tests/browser/dashboard-check.mjs "http://127.0.0.1:$ui" "$out" "$p50"
if [ "$keep" = "--keep-screenshots" ]; then cp "$out"/dashboard-*.png docs/; echo "screenshots copied to docs/"; fi
echo "browser check passed"
