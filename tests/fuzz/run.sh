#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP contract with schemathesis, a real
# third-party tool: every operation of protocol/openapi.yaml against the real
# binary, in open mode and with a publisher key, each with a fixed seed and
# then a random one (printed, so a failure can be replayed). Fails on any
# failed check (see open.toml / keyed.toml for the few that do not apply and
# why), on a server that died, hung or logged a panic, and on a missing tool.
#
#   tests/fuzz/run.sh [--seconds N] [--binary PATH]
#
# Installs schemathesis (tests/fuzz/requirements.txt) into a virtualenv at
# $FUZZ_VENV (default target/fuzz-venv) when it is not there yet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/fuzz"
SECONDS_EACH=60
BINARY="$ROOT/target/debug/ssehub"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_EACH="$2"; shift ;;
    --binary) BINARY="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x "$BINARY" ]] || (cd "$ROOT" && cargo build -q -p ssehub)

VENV="${FUZZ_VENV:-$ROOT/target/fuzz-venv}"
if [[ ! -x "$VENV/bin/schemathesis" ]] || ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF -f <(grep -v '^#' "$HERE/requirements.txt"); then
  echo "== installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
fi
echo "schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}')"

WORK=$(mktemp -d /tmp/ssehub-fuzz.XXXXXX)
# schemathesis (hypothesis) keeps its example database in the working directory.
cd "$WORK"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME [ssehub options]: the server on a free port; sets PORT.
start() {
  local name="$1"
  shift
  "$BINARY" --listen 127.0.0.1:0 --log warn "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grep -q 'listening on' "$WORK/$name.out" && break
    sleep 0.1
  done
  PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$WORK/$name.out")
  [[ -n "$PORT" ]] || { echo "$name: the server did not start" >&2; cat "$WORK/$name.err" >&2; exit 1; }
}

# stop NAME: the server must still answer, then stop cleanly, without a panic in its log.
stop() {
  local name="$1"
  if ! curl -sf -m 5 "http://127.0.0.1:$PORT/healthz" >/dev/null; then
    echo "FAIL $name: the server no longer answers /healthz after the fuzz run" >&2
    cat "$WORK/$name.err" >&2
    exit 1
  fi
  kill -TERM "$SERVER_PID"
  if ! timeout 20 tail --pid="$SERVER_PID" -f /dev/null; then
    echo "FAIL $name: the server did not stop within 20 s of SIGTERM" >&2
    exit 1
  fi
  wait "$SERVER_PID" || { echo "FAIL $name: the server exited with status $?" >&2; exit 1; }
  SERVER_PID=""
  if grep -q 'panicked' "$WORK/$name.err"; then
    echo "FAIL $name: the server logged a panic" >&2
    cat "$WORK/$name.err" >&2
    exit 1
  fi
}

# fuzz NAME CONFIG SEED [schemathesis options]
fuzz() {
  local name="$1" config="$2" seed="$3"
  shift 3
  echo "== $name: seed $seed, $SECONDS_EACH s"
  local status=0
  "$VENV/bin/schemathesis" --config-file "$config" --no-color run "$ROOT/protocol/openapi.yaml" \
    --url "http://127.0.0.1:$PORT" --seed "$seed" --max-time "$SECONDS_EACH" \
    --workers 1 --request-timeout 10 "$@" >"$WORK/run.log" 2>&1 || status=$?
  sed -n '/=== SUMMARY ===/,$p' "$WORK/run.log"
  if [[ $status -ne 0 ]]; then
    echo "FAIL $name (seed $seed): schemathesis found failures; its report:" >&2
    cat "$WORK/run.log" >&2
    exit 1
  fi
}

FIXED_SEED=20261203
RANDOM_SEED=$(( (RANDOM << 15) | RANDOM ))

# One worker: CPython 3.11's parser is not safe for the tool's own threads
# ("AST constructor recursion depth mismatch" inside hypothesis), and the
# server is what is under test, not the tool's concurrency.
#
# Open mode: no credentials are needed, so none are generated (made-up ones
# are refused as they should be, which would keep the fuzzer out of the
# operations). The example origin is allowed, so preflights get both answers.
ORIGIN="https://app.example"
# The largest --max-timeout any server may have, so that every timeout the
# schemas allow is one this server accepts.
LIMITS=(--max-timeout 999999)
start open --cors-origin "$ORIGIN" "${LIMITS[@]}"
fuzz "open mode" "$HERE/open.toml" "$FIXED_SEED" --generation-with-security-parameters false
fuzz "open mode" "$HERE/open.toml" "$RANDOM_SEED" --generation-with-security-parameters false
stop open

KEY="fuzz-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start keyed --publisher-key "$KEY" --cors-origin "$ORIGIN" "${LIMITS[@]}"
fuzz "with a publisher key" "$HERE/keyed.toml" "$FIXED_SEED" -H "Authorization: Bearer $KEY"
fuzz "with a publisher key" "$HERE/keyed.toml" "$RANDOM_SEED" -H "Authorization: Bearer $KEY"
stop keyed
echo "fuzz: no failure (seeds $FIXED_SEED and $RANDOM_SEED)"
