#!/usr/bin/env bash
# About 20 s of ssehub-bench against ssehub alone, for CI: exits non-zero if any
# message was lost or duplicated, a subscriber failed, or a replay was wrong.
# Performance figures are printed but not judged.
#
#   bench/smoke.sh [--release]
#
# Builds the debug binaries by default (cheap after `cargo test`); --release
# builds optimised ones. SSEHUB_BIN and BENCH_BIN (both) use prebuilt binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=debug
[[ "${1:-}" == "--release" ]] && PROFILE=release

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ -n "${SSEHUB_BIN:-}" && -n "${BENCH_BIN:-}" ]]; then
  SSEHUB="$SSEHUB_BIN"
  BENCH="$BENCH_BIN"
else
  flags=()
  [[ $PROFILE == release ]] && flags=(--release)
  (cd "$ROOT" && cargo build --quiet "${flags[@]}" -p ssehub -p ssehub-bench)
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  SSEHUB="$TARGET_DIR/$PROFILE/ssehub"
  BENCH="$TARGET_DIR/$PROFILE/ssehub-bench"
fi

WORK=$(mktemp -d /tmp/ssehub-smoke.XXXXXX)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$SSEHUB" --listen 127.0.0.1:0 --log warn --history-size 5000 >"$WORK/out" 2>"$WORK/err" &
SERVER_PID=$!
for _ in $(seq 1 200); do
  grep -q 'listening on' "$WORK/out" && break
  sleep 0.05
done
PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$WORK/out" | head -1)
if [[ -z "$PORT" ]]; then
  echo "smoke: ssehub did not start" >&2
  cat "$WORK/err" >&2
  exit 1
fi

COMMON=(--server-name ssehub --server-pid "$SERVER_PID"
  --sub-url "http://127.0.0.1:$PORT/channels/{channel}/events?timeout=600"
  --pub-url "http://127.0.0.1:$PORT/channels/{channel}/messages"
  --open-timeout 30)

failed=0
run() {
  local label="$1"
  shift
  echo "== $label"
  local rc=0
  "$BENCH" "$@" "${COMMON[@]}" --label "$label" >"$WORK/run.out" 2>&1 || rc=$?
  grep -v '^RESULT ' "$WORK/run.out" || true
  if [[ $rc -ne 0 ]]; then
    echo "smoke: FAILED: $label (exit status $rc)"
    failed=$((failed + 1))
  fi
}

run "fanout 1x200 @200/s" fanout --subscribers 200 --channels 1 --rate 200 --seconds 4
run "fanout 20x20 @200/s, 1 KB payloads" fanout --subscribers 400 --channels 20 --rate 200 --seconds 4 --payload-bytes 1000
run "fanout 1x100 saturation" fanout --subscribers 100 --channels 1 --rate 0 --seconds 3
run "publish, 100 subscribers" publish --subscribers 100 --seconds 2
run "resume 3,000 / 1,000 back" resume --backlog 3000 --back 3000,1000 --repeat 3
run "hold 1,000 (2 procs)" hold --subscribers 1000 --procs 2 --hold-seconds 0.5 --settle-max 2

if [[ $failed -ne 0 ]]; then
  echo "smoke: $failed scenario(s) failed"
  exit 1
fi
echo "smoke: all scenarios correct (no message lost or duplicated)"
