#!/usr/bin/env bash
# Runs the same benchmark scenarios against ssehub and Nchan (nginx pub/sub
# module) on loopback, alternating, several repetitions, and prints one
# Markdown table of medians with the ratio ssehub/Nchan.
#
#   bench/compare-nchan.sh [--quick] [--reps N] [--seconds S] [--out DIR] [--only REGEX] [--floor]
#
#   --quick      ~1-minute smoke run with small sizes (1 repetition unless --reps)
#   --reps N     repetitions of every scenario per server (default 3)
#   --seconds S  length of each fixed-rate fanout run (default 15)
#   --out DIR    where results.txt, bench.log and table.md go
#                (default /tmp/ssehub-bench-YYYYmmdd-HHMMSS)
#   --only RE    run only the scenarios whose label matches the regex
#   --floor      also run the fixed-rate fanout scenarios against `ssehub-bench
#                floor`, the cheapest possible server (one write per delivery,
#                nothing else): a third column showing what the kernel alone
#                costs per delivery on this machine (adds ~4 minutes)
#
# Environment: SSEHUB_BIN and BENCH_BIN (both) use prebuilt binaries instead
# of `cargo build --release`; QUIET_MAX (default 10) is how many seconds a run
# waits for other processes on the machine to go quiet before it starts, and
# QUIET_TOTAL (default 60) caps that waiting over the whole script; RERUN_MAX
# (default 6) is how many noisy runs are discarded and run again.
#
# Servers are pinned to CPU 0 (taskset -c 0), the load generator to CPU 1.
# Every server is started fresh for each scenario and stopped after it; all
# are stopped on exit. Needs root (or sudo) only to install nginx + Nchan.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
REPS=""
SECONDS_FIXED=15
OUT=""
ONLY=""
FLOOR=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS="$2"; shift ;;
    --seconds) SECONDS_FIXED="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --floor) FLOOR=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$REPS" ]]; then
  if [[ $QUICK -eq 1 ]]; then REPS=1; else REPS=3; fi
fi
STARTED_AT=$(date +%s)

# Open files: servers and load generator inherit the raised limit.
HARD=$(ulimit -Hn)
ulimit -n "$HARD" || true
echo "open-file limit: $(ulimit -n) (hard $HARD)"
if [[ "$(nproc)" -lt 2 ]]; then
  echo "warning: $(nproc) CPU(s): server and load generator cannot be pinned apart" >&2
fi

# nginx + Nchan.
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null 2>&1 || [[ ! -e "$NCHAN_SO" ]]; then
  echo "== installing nginx and libnginx-mod-nchan"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan >/dev/null
fi
if [[ ! -e "$NCHAN_SO" ]]; then
  NCHAN_SO=$(dpkg -L libnginx-mod-nchan 2>/dev/null | grep 'ngx_nchan_module\.so$' | head -1 || true)
fi
[[ -e "$NCHAN_SO" ]] || { echo "ngx_nchan_module.so not found" >&2; exit 1; }

# SSEHUB_BIN and BENCH_BIN (both) select prebuilt binaries instead of building.
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

WORK=$(mktemp -d /tmp/ssehub-compare.XXXXXX)
OUT="${OUT:-/tmp/ssehub-bench-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
LOG="$OUT/bench.log"
: >"$RESULTS"
: >"$LOG"

SERVER_PID=""
MEASURE_PID=""
PORT=""
cleanup() {
  stop_server || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  # An nginx worker outlives a master that had to be killed.
  if [[ -n "$MEASURE_PID" && "$MEASURE_PID" != "$SERVER_PID" ]] && kill -0 "$MEASURE_PID" 2>/dev/null; then
    kill -KILL "$MEASURE_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  MEASURE_PID=""
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server did not listen on port $1" >&2
  return 1
}

# launch NAME COMMAND...: starts COMMAND pinned to CPU 0 and waits for its
# "listening on http://127.0.0.1:PORT" line; sets SERVER_PID, MEASURE_PID, PORT.
launch() {
  local name="$1"
  shift
  : >"$WORK/$name.out"
  taskset -c 0 "$@" >"$WORK/$name.out" 2>>"$OUT/$name.stderr" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    grep -q 'listening on' "$WORK/$name.out" && break
    sleep 0.05
  done
  PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$WORK/$name.out" | head -1)
  [[ -n "$PORT" ]] || { echo "$name did not start" >&2; cat "$OUT/$name.stderr" >&2; exit 1; }
  MEASURE_PID=$SERVER_PID
}

# start_ssehub [extra ssehub options]
start_ssehub() {
  launch ssehub "$SSEHUB" --listen 127.0.0.1:0 --log warn "$@"
  SUB_URL="http://127.0.0.1:$PORT/channels/{channel}/events?timeout=3600"
  PUB_URL="http://127.0.0.1:$PORT/channels/{channel}/messages"
}

# start_floor: the yardstick server (see bench/src/floor.rs).
start_floor() {
  launch floor "$BENCH" floor --listen 127.0.0.1:0
  SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
  PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
}

# write_nginx_conf PORT DIR
write_nginx_conf() {
  local port="$1" dir="$2"
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
load_module $NCHAN_SO;
worker_processes 1;
worker_rlimit_nofile $HARD;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $OUT/nginx-error.log warn;
events {
  # Nchan uses more connection slots than sockets: with worker_connections equal
  # to the open-file limit, nginx reuses (closes) ~1,300 of 19,000 subscribers.
  worker_connections $((HARD * 2));
  multi_accept on;
}
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  nchan_shared_memory_size 256M;
  server {
    listen 127.0.0.1:$port backlog=4096;
    # Live subscribers: EventSource, new messages only, never time out.
    location ~ ^/sub/([A-Za-z0-9_.:-]+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
      nchan_subscriber_timeout 0;
    }
    # Publisher: 1000 messages buffered per channel for Last-Event-ID resume.
    location ~ ^/pub/([A-Za-z0-9_.:-]+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 1000;
      nchan_message_timeout 1h;
    }
    # Resume scenario: 20000 messages buffered (ssehub runs with --history-size 20000).
    location ~ ^/rsub/([A-Za-z0-9_.:-]+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
      nchan_subscriber_timeout 0;
    }
    location ~ ^/rpub/([A-Za-z0-9_.:-]+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 20000;
      nchan_message_timeout 1h;
    }
  }
}
EOF
}

# start_nchan [resume]
start_nchan() {
  PORT=$("$BENCH" free-port)
  local dir="$WORK/nginx"
  rm -rf "$dir"
  write_nginx_conf "$PORT" "$dir"
  taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$OUT/nginx.stderr" &
  SERVER_PID=$!
  wait_port "$PORT"
  MEASURE_PID=""
  for _ in $(seq 1 50); do
    MEASURE_PID=$(pgrep -P "$SERVER_PID" | head -1 || true)
    [[ -n "$MEASURE_PID" ]] && break
    sleep 0.05
  done
  [[ -n "$MEASURE_PID" ]] || { echo "no nginx worker" >&2; exit 1; }
  if [[ "${1:-}" == "resume" ]]; then
    SUB_URL="http://127.0.0.1:$PORT/rsub/{channel}"
    PUB_URL="http://127.0.0.1:$PORT/rpub/{channel}"
  else
    SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
    PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
  fi
}

# Check that nginx accepts the configuration before anything else.
write_nginx_conf "$("$BENCH" free-port)" "$WORK/nginx-check"
if ! nginx -t -p "$WORK/nginx-check" -c "$WORK/nginx-check/nginx.conf" >"$WORK/nginx-t.out" 2>&1; then
  echo "nginx -t rejects the configuration:" >&2
  cat "$WORK/nginx-t.out" >&2
  exit 1
fi
echo "nginx -t: configuration accepted ($(nginx -v 2>&1 | sed 's/.*\///'), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'))"

# Hundredths of a CPU-second used on the whole machine over half a second.
busy_centicpus() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
  sleep 0.5
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
  echo $(( b - a ))
}

# Other work on this machine skews every figure: wait (up to QUIET_MAX s per
# run, QUIET_TOTAL s over the whole script) until less than a quarter of a CPU
# is busy (sampled over 0.5 s).
QUIET_MAX="${QUIET_MAX:-10}"
QUIET_TOTAL="${QUIET_TOTAL:-60}"
QUIET_SPENT=0
# Runs whose load generator saw other processes take more than 15 % of a CPU
# (or steal above 2 %) are discarded and run again, at most RERUN_MAX times.
RERUNS_LEFT="${RERUN_MAX:-6}"
wait_quiet() {
  local waited=0 busy
  busy=$(busy_centicpus)
  while (( busy > 12 && waited < QUIET_MAX && QUIET_SPENT < QUIET_TOTAL )); do
    sleep 2.5
    waited=$(( waited + 3 ))
    QUIET_SPENT=$(( QUIET_SPENT + 3 ))
    busy=$(busy_centicpus)
  done
  if (( busy > 12 )); then
    echo "   note: machine busy before this run (other processes used ${busy}/100 of the CPUs over 0.5 s)" | tee -a "$LOG"
  elif (( waited > 0 )); then
    echo "   (waited ${waited} s for other processes to go quiet)" | tee -a "$LOG"
  fi
}

# run_case SERVER LABEL SCENARIO [bench options]
run_case() {
  local server="$1" label="$2" scenario="$3"
  shift 3
  local kind=""
  [[ "$scenario" == "resume" ]] && kind="resume"
  wait_quiet
  if [[ "$server" == "ssehub" ]]; then
    if [[ "$kind" == "resume" ]]; then start_ssehub --history-size 20000; else start_ssehub; fi
  elif [[ "$server" == "floor" ]]; then
    start_floor
  else
    start_nchan "$kind"
  fi
  echo "---- $label [$server] (pid $MEASURE_PID, port $PORT) $(date +%T)" | tee -a "$LOG"
  local rc=0
  taskset -c 1 "$BENCH" "$scenario" --server-name "$server" --label "$label" \
    --server-pid "$MEASURE_PID" --sub-url "$SUB_URL" --pub-url "$PUB_URL" "$@" \
    >"$WORK/run.out" 2>&1 || rc=$?
  cat "$WORK/run.out" >>"$LOG"
  grep -v '^RESULT ' "$WORK/run.out" || true
  [[ $rc -eq 0 ]] || echo "   (exit status $rc)"
  stop_server
  if grep -q '^RESULT .*"noisy":true' "$WORK/run.out" && (( RERUNS_LEFT > 0 )); then
    RERUNS_LEFT=$(( RERUNS_LEFT - 1 ))
    grep '^RESULT ' "$WORK/run.out" >>"$OUT/discarded.txt" || true
    echo "   noisy run (other processes were busy): discarded, running it again ($RERUNS_LEFT reruns left)" | tee -a "$LOG"
    run_case "$server" "$label" "$scenario" "$@"
    return
  fi
  grep '^RESULT ' "$WORK/run.out" >>"$RESULTS" || true
}

# Scenarios: LABEL|SCENARIO|OPTIONS
if [[ $QUICK -eq 1 ]]; then
  CASES=(
    "hold 2,000|hold|--subscribers 2000"
    "hold 4,000 (2 procs)|hold|--subscribers 4000 --procs 2"
    "fanout 1x500 @60/s|fanout|--subscribers 500 --channels 1 --rate 60 --seconds 4"
    "fanout 10x100 @100/s|fanout|--subscribers 1000 --channels 10 --rate 100 --seconds 4"
    "fanout 1x200 saturation|fanout|--subscribers 200 --channels 1 --rate 0 --seconds 3"
    "publish, 0 subscribers|publish|--subscribers 0 --seconds 2"
    "publish, 100 subscribers|publish|--subscribers 100 --seconds 2"
    "resume 2,000 / 1,000 back|resume|--backlog 2000 --back 2000,1000 --repeat 3"
  )
else
  S="$SECONDS_FIXED"
  CASES=(
    "hold 10,000|hold|--subscribers 10000"
    "hold 19,000 (2 procs)|hold|--subscribers 19000 --procs 2"
    "fanout 1x1,000 @60/s|fanout|--subscribers 1000 --channels 1 --rate 60 --seconds $S"
    "fanout 1x10,000 @6/s|fanout|--subscribers 10000 --channels 1 --rate 6 --seconds $S"
    "fanout 100x100 @600/s|fanout|--subscribers 10000 --channels 100 --rate 600 --seconds $S"
    "fanout 1x1,000 saturation|fanout|--subscribers 1000 --channels 1 --rate 0 --seconds 6"
    "publish, 0 subscribers|publish|--subscribers 0 --seconds 4"
    "publish, 100 subscribers|publish|--subscribers 100 --seconds 4"
    "resume 10,000 / 1,000 back|resume|--backlog 10000 --back 10000,1000 --repeat 5"
  )
fi

for rep in $(seq 1 "$REPS"); do
  echo "==== repetition $rep/$REPS"
  for case in "${CASES[@]}"; do
    IFS='|' read -r label scenario opts <<<"$case"
    if [[ -n "$ONLY" ]] && ! [[ "$label" =~ $ONLY ]]; then continue; fi
    # Alternate which server goes first.
    if (( rep % 2 == 1 )); then order=(ssehub Nchan); else order=(Nchan ssehub); fi
    if [[ $FLOOR -eq 1 && "$scenario" == "fanout" && "$label" == *"/s"* ]]; then order+=(floor); fi
    for server in "${order[@]}"; do
      # shellcheck disable=SC2086
      run_case "$server" "$label" "$scenario" $opts
    done
  done
done

ELAPSED=$(( $(date +%s) - STARTED_AT ))
{
  echo "ssehub vs Nchan, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(uname -r)"
  echo "ssehub $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$( (cd "$ROOT" && [[ -n "$(git status --porcelain 2>/dev/null)" ]]) && echo ' (with uncommitted changes)'), $(nginx -v 2>&1 | sed 's/.*: //') + nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
  echo "servers pinned to CPU 0, load generator to CPU 1; medians of $REPS run(s) per server; run took ${ELAPSED} s"
  echo
  if [[ $FLOOR -eq 1 ]]; then
    echo "floor: \`ssehub-bench floor\`, one write per delivery and nothing else (see bench/README.md)"
    echo
    "$BENCH" table --servers ssehub,Nchan,floor "$RESULTS"
  else
    "$BENCH" table --servers ssehub,Nchan "$RESULTS"
  fi
} >"$OUT/table.md"
echo
cat "$OUT/table.md"
echo
echo "results: $RESULTS, log: $LOG, table: $OUT/table.md"
