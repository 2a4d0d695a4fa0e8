#!/usr/bin/env bash
# Naming benchmark, one command: starts Lodestar on a private PostgreSQL in a
# temporary directory, preloads 1,000 services x 10 instances over gRPC, then
# measures (each run against the same Lodestar, on this machine, with the
# load generator on it too):
#   discover   INSTANCE discovery, warm, on bidi streams (SDK style)
#   echo       the ceiling: a bare gRPC-core echo server answering a payload
#              of the discover answer's size, from the same load generator
#   register   durable registrations (acknowledged after COMMIT)
#   heartbeat  heartbeat relay to the health worker
#
#   bench/polaris_naming.sh [BUILD_DIR] [SECONDS] [CONCURRENCY] [REGISTER_IN_FLIGHT]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
SECS=${2:-10}
CONC=${3:-32}
REGC=${4:-512}   # registrations in flight: many SDK clients registering at once
BIN=$BUILD/bin
[ -x "$BIN/lodestar-bench" ] || { echo "build first: cmake --build $BUILD (missing $BIN/lodestar-bench)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d /tmp/lodestar-bench-XXXXXX)
chmod 755 "$DIR"
HTTP=$(free_port); GRPC=$(free_port); GRPCC=$(free_port); ECHO=$(free_port)
cat > "$DIR/lodestar.yaml" <<YAML
runtime_dir: $DIR/run
logging: {level: warn}
store:
  embedded: {data_dir: $DIR/pg}
listeners:
  - {name: polaris-http, protocol: polaris-http, address: 127.0.0.1, port: $HTTP}
  - {name: polaris-grpc-naming, protocol: polaris-grpc, address: 127.0.0.1, port: $GRPC}
  - {name: polaris-grpc-config, protocol: polaris-grpc, address: 127.0.0.1, port: $GRPCC}
YAML
LPID=""; EPID=""
cleanup() {
  [ -n "$EPID" ] && kill "$EPID" 2>/dev/null || true
  if [ -n "$LPID" ]; then kill -TERM "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
"$BIN/lodestar" -c "$DIR/lodestar.yaml" > "$DIR/lodestar.log" 2>&1 &
LPID=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null || { tail -30 "$DIR/lodestar.log"; exit 1; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); ${SECS}s per run, concurrency $CONC, $REGC registrations in flight"
"$BIN/lodestar-bench" preload "127.0.0.1:$GRPC" 1000 10
sleep 1   # let every gateway replica apply the last changes
"$BIN/lodestar-bench" discover "127.0.0.1:$GRPC" "$CONC" 2 1000 > /dev/null   # warm the caches
DISC=$("$BIN/lodestar-bench" discover "127.0.0.1:$GRPC" "$CONC" "$SECS" 1000)
echo "$DISC"
PAYLOAD=$(sed -n 's/.*avg_resp_bytes=\([0-9]*\).*/\1/p' <<<"$DISC")
"$BIN/lodestar-bench" echo-server "$ECHO" "$PAYLOAD" > /dev/null &
EPID=$!
sleep 0.5
ECH=$("$BIN/lodestar-bench" echo "127.0.0.1:$ECHO" "$CONC" "$SECS")
echo "$ECH"
kill "$EPID"; wait "$EPID" 2>/dev/null || true; EPID=""
"$BIN/lodestar-bench" register "127.0.0.1:$GRPC" "$REGC" "$SECS"
"$BIN/lodestar-bench" heartbeat "127.0.0.1:$GRPC" "$CONC" "$SECS" 1000 10
d=$(sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' <<<"$DISC"); e=$(sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' <<<"$ECH")
echo "discover/echo ceiling = $(( 100 * d / (e > 0 ? e : 1) ))% (target >= 60%)"
