#!/usr/bin/env bash
# Soak test (not in CI): the ssehub release binary under mixed load for a long
# time; fails if memory or file descriptors grow without bound, if a stalled
# reader is not ended, or if any acknowledged message is lost or duplicated.
#
#   bench/soak.sh [--minutes N | --seconds N | --quick] [--out DIR] [--seed N]
#
#   --minutes N  length of the load (default 10)
#   --seconds N  the same in seconds
#   --quick      about 1 minute of load (60 s)
#   --out DIR    where server.log, bench.out, samples.csv, summary.json and
#                table.md go (default /tmp/ssehub-soak-YYYYmmdd-HHMMSS)
#   --seed N     seed of the churn and resume choices (default: random, printed)
#
# Meanwhile (see bench/README.md, "Soak"): `ssehub-bench fanout` publishes at a
# steady rate on several channels to subscribers that stay connected (and
# checks them); bench/soak.py adds subscribers that churn and resume with
# Last-Event-ID, stalled readers the server must end after --write-timeout,
# and resume checks with old ids (replay or gap frame, never a silent hole),
# samples the server's RSS and open fds, and prints the table and verdict.
#
# Sizes (environment, defaults in brackets): SOAK_CHANNELS [8], SOAK_RATE [160
# msg/s in all], SOAK_SUBSCRIBERS [1600 steady], SOAK_CHURNERS [200],
# SOAK_STALL_BATCH [20 every SOAK_STALL_EVERY = 10 s], SOAK_WRITE_TIMEOUT [5 s],
# SOAK_HISTORY [250 messages per channel], SOAK_PAYLOAD [200 bytes of padding].
# Tolerances: SOAK_RSS_TOL_PCT [10] and SOAK_RSS_SLACK_MB [4; 8 with --quick]
# (the mean RSS of the last quarter of the load may exceed that of the second
# quarter by the larger of the two), SOAK_FD_TOL_PCT [10] and SOAK_FD_SLACK [20] (the same for fds),
# SOAK_FD_RETURN_SLACK [10] (fds over the baseline allowed once the load is
# gone). SSEHUB_BIN and BENCH_BIN (both) use prebuilt binaries; SSEHUB_VERSION
# names the server in the table (default: this checkout's commit).
#
# The server is pinned to CPU 0 (taskset -c 0), the load to CPU 1. Exit status
# 0 when every check passed, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOAD_SECONDS=600
QUICK=0
OUT=""
SEED=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) LOAD_SECONDS=$(( $2 * 60 )); shift ;;
    --seconds) LOAD_SECONDS="$2"; shift ;;
    --quick) LOAD_SECONDS=60; QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    --seed) SEED=(--seed "$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$LOAD_SECONDS" =~ ^[1-9][0-9]*$ && "$LOAD_SECONDS" -ge 20 ]] || { echo "soak: the load must last at least 20 s" >&2; exit 2; }
OUT="${OUT:-/tmp/ssehub-soak-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

CHANNELS="${SOAK_CHANNELS:-8}"
RATE="${SOAK_RATE:-160}"
SUBSCRIBERS="${SOAK_SUBSCRIBERS:-1600}"
CHURNERS="${SOAK_CHURNERS:-200}"
STALL_BATCH="${SOAK_STALL_BATCH:-20}"
STALL_EVERY="${SOAK_STALL_EVERY:-10}"
WRITE_TIMEOUT="${SOAK_WRITE_TIMEOUT:-5}"
HISTORY="${SOAK_HISTORY:-250}"
PAYLOAD="${SOAK_PAYLOAD:-200}"
# RSS rises by about 8 MB over the first 90 s (histories filling, allocator
# settling) and is flat after that: a 1-minute run sees only that rise, so it
# is allowed more (it still catches a leak of a few MB a minute).
RSS_SLACK_MB="${SOAK_RSS_SLACK_MB:-$([[ $QUICK -eq 1 ]] && echo 8 || echo 4)}"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(nproc)" -lt 2 ]]; then
  echo "warning: $(nproc) CPU(s): server and load cannot be pinned apart" >&2
fi
command -v python3 >/dev/null || { echo "soak: needs python3" >&2; exit 1; }

if [[ -n "${SSEHUB_BIN:-}" && -n "${BENCH_BIN:-}" ]]; then
  SSEHUB="$SSEHUB_BIN"
  BENCH="$BENCH_BIN"
else
  echo "== cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet -p ssehub -p ssehub-bench)
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  SSEHUB="$TARGET_DIR/release/ssehub"
  BENCH="$TARGET_DIR/release/ssehub-bench"
fi

# What the table calls the server. --no-optional-locks: git status must not
# write the index while someone else may be committing in this checkout.
if [[ -n "${SSEHUB_VERSION:-}" ]]; then
  COMMIT="$SSEHUB_VERSION"
elif [[ -n "${SSEHUB_BIN:-}" ]]; then
  COMMIT="prebuilt $SSEHUB_BIN"
else
  COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [[ -n "$(git -C "$ROOT" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
  fi
fi

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server: one core, info log (it counts streams ended for not reading),
# a short write timeout so that stalled readers are ended often, a short
# history so that long absences end in gap frames.
taskset -c 0 "$SSEHUB" --listen 127.0.0.1:0 --log info \
  --write-timeout "$WRITE_TIMEOUT" --history-size "$HISTORY" \
  >"$OUT/server.out" 2>"$OUT/server.log" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 200); do
  PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$OUT/server.out" | head -1)
  [[ -n "$PORT" ]] && break
  sleep 0.05
done
if [[ -z "$PORT" ]]; then
  echo "soak: ssehub did not start" >&2
  cat "$OUT/server.log" >&2
  exit 1
fi

STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== soak: ${LOAD_SECONDS} s of load on ssehub $COMMIT (pid $SERVER_PID, port $PORT, CPU 0), load on CPU 1; output in $OUT"

rc=0
taskset -c 1 python3 "$ROOT/bench/soak.py" \
  --port "$PORT" --server-pid "$SERVER_PID" --server-log "$OUT/server.log" \
  --bench "$BENCH" --out "$OUT" --seconds "$LOAD_SECONDS" \
  --channels "$CHANNELS" --rate "$RATE" --bench-subscribers "$SUBSCRIBERS" \
  --churners "$CHURNERS" --stall-batch "$STALL_BATCH" --stall-every "$STALL_EVERY" \
  --write-timeout "$WRITE_TIMEOUT" --history-size "$HISTORY" --payload-bytes "$PAYLOAD" \
  --rss-tol-pct "${SOAK_RSS_TOL_PCT:-10}" --rss-slack-mb "$RSS_SLACK_MB" \
  --fd-tol-pct "${SOAK_FD_TOL_PCT:-10}" --fd-slack "${SOAK_FD_SLACK:-20}" \
  --fd-return-slack "${SOAK_FD_RETURN_SLACK:-10}" \
  --title "ssehub soak, $STARTED, ssehub $COMMIT, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), server on CPU 0 with --write-timeout $WRITE_TIMEOUT --history-size $HISTORY" \
  "${SEED[@]}" || rc=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "soak: FAIL: the server exited during the run" >&2
  tail -20 "$OUT/server.log" >&2
  rc=1
fi
# Warnings and errors of the server, but for the one about running without a
# publisher key: shown, not judged.
sed 's/\x1b\[[0-9;]*m//g' "$OUT/server.log" | grep -E ' (ERROR|WARN) |panicked' | grep -v 'NO PUBLISHER KEY' \
  | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -5 >"$OUT/server-warnings.txt" || true
if [[ -s "$OUT/server-warnings.txt" ]]; then
  echo "soak: the server logged warnings or errors (not judged; counts, first 5 kinds):"
  cat "$OUT/server-warnings.txt"
fi
echo "output: $OUT (table.md, samples.csv, summary.json, bench.out, server.log)"
exit "$rc"
