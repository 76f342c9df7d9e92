#!/usr/bin/env bash
# How ssehub's CPU and memory grow with work: three sizes each of subscribers,
# channels and message size, at about the same delivery rate, plus the
# saturation point (the knee) for one channel. ssehub only; Nchan is in
# compare-nchan.sh.
#
#   bench/scale.sh [--seconds S] [--out DIR]
#
# Each run starts a fresh server pinned to CPU 0 and the load generator pinned
# to CPU 1, like compare-nchan.sh. Prints one Markdown table; RESULT lines go
# to DIR/results.txt. About 3 minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_RUN=10
OUT="/tmp/ssehub-scale-$(date -u +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: bench/scale.sh [--seconds S] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ -n "${SSEHUB_BIN:-}" && -n "${BENCH_BIN:-}" ]]; then
  SSEHUB="$SSEHUB_BIN"; BENCH="$BENCH_BIN"
else
  (cd "$ROOT" && cargo build --release --quiet -p ssehub -p ssehub-bench)
  SSEHUB="${CARGO_TARGET_DIR:-$ROOT/target}/release/ssehub"
  BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/ssehub-bench"
fi

SERVER_PID=""
cleanup() { [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# run LABEL SUBSCRIBERS CHANNELS RATE PAYLOAD_BYTES
run() {
  local label="$1" subs="$2" channels="$3" rate="$4" payload="$5" port=""
  taskset -c 0 "$SSEHUB" --listen 127.0.0.1:0 --log warn >"$OUT/server.out" 2>>"$OUT/server.err" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    port=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$OUT/server.out" | head -1)
    [[ -n "$port" ]] && break
    sleep 0.05
  done
  [[ -n "$port" ]] || { echo "ssehub did not start" >&2; exit 1; }
  taskset -c 1 "$BENCH" fanout --server-name ssehub --label "$label" --server-pid "$SERVER_PID" \
    --sub-url "http://127.0.0.1:$port/channels/{channel}/events?timeout=3600" \
    --pub-url "http://127.0.0.1:$port/channels/{channel}/messages" \
    --subscribers "$subs" --channels "$channels" --rate "$rate" --payload-bytes "$payload" \
    --seconds "$SECONDS_PER_RUN" >"$OUT/run.out" 2>&1 || true
  grep '^RESULT ' "$OUT/run.out" | sed 's/^RESULT //' >>"$OUT/results.txt" || { cat "$OUT/run.out" >&2; exit 1; }
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  echo "done: $label" >&2
}

: >"$OUT/results.txt"
# Subscribers, one channel, ~30,000 deliveries/s.
run "subscribers 1,000"  1000  1 30 0
run "subscribers 5,000"  5000  1 6  0
run "subscribers 10,000" 10000 1 3  0
# Channels, 1,000 subscribers in all, ~30,000 deliveries/s.
run "channels 1 (1,000 each)"   1000 1   30   0
run "channels 10 (100 each)"    1000 10  300  0
run "channels 100 (10 each)"    1000 100 3000 0
# Message size, 1 x 1,000 at 30 msg/s.
run "payload 100 B" 1000 1 30 100
run "payload 1 KB"  1000 1 30 1000
run "payload 10 KB" 1000 1 30 10000
# The knee: one channel of 1,000 as fast as the server answers.
run "saturation 1 x 1,000" 1000 1 0 0

python3 - "$OUT/results.txt" <<'EOF' | tee "$OUT/table.md"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("| run | deliveries/s | deliveries per server CPU-s | server CPU % | RSS MB (before → after) | p99 ms | lost+dup |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    cpu = r.get("server_cpu_s") or 0
    window = r.get("window_s") or 1
    mb = lambda v: f"{v / 1048576:.1f}" if isinstance(v, (int, float)) else "?"
    print(f"| {r['label']} | {r.get('deliveries_per_s', 0):,.0f} | {r.get('deliveries_per_cpu_s') or 0:,.0f} | "
          f"{100 * cpu / window:.0f} | {mb(r.get('server_rss_before'))} → {mb(r.get('server_rss_after'))} | "
          f"{r['latency_ms']['p99']:.1f} | {r.get('lost', 0) + r.get('dup', 0)} |")
EOF
echo "results: $OUT/results.txt" >&2
