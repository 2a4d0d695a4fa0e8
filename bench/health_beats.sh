#!/usr/bin/env bash
# Health benchmark, one command. On this machine, with the load generator
# on it too, each mode against a fresh Lodestar on a private PostgreSQL in a
# temporary directory, 1,000 services x 10 heartbeat-checked instances
# preloaded over gRPC:
#   memory  heartbeat store memory: unary Heartbeat (the polaris-go path)
#           and BatchHeartbeat streams (BATCH beats per message), end to end
#           over gRPC: gateway -> health worker -> store, acknowledged
#   redis   heartbeat store Redis (a private redis-server on a Unix socket):
#           BatchHeartbeat as above (every relayed batch is one HSET,
#           acknowledged after Redis answered), then `redis-benchmark -t set`
#           on the same Redis and socket, for the ratio
#   wheel   the time wheel's CPU cost per second with 100,000 instances
#           (bench/health_wheel.c on a simulated clock)
#
#   bench/health_beats.sh [BUILD_DIR] [SECONDS] [STREAMS] [BATCH]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
SECS=${2:-10}
STREAMS=${3:-16}
BATCH=${4:-100}
SERVICES=1000
INSTANCES=10
BIN=$BUILD/bin
for b in lodestar lodestar-bench lodestar-health-wheel; do
  [ -x "$BIN/$b" ] || { echo "build first: cmake --build $BUILD (missing $BIN/$b)" >&2; exit 1; }
done
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
  { echo "redis-server and redis-benchmark are needed (apt-get install redis-server redis-tools)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d /tmp/lodestar-hbench-XXXXXX)
chmod 755 "$DIR"
LPID=""; RPID=""
cleanup() {
  if [ -n "$LPID" ]; then kill -TERM "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; fi
  if [ -n "$RPID" ]; then kill -TERM "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT

# start_lodestar NAME [HEALTHCHECK_YAML]: a fresh node in $DIR/NAME
start_lodestar() {
  local name=$1 hc=${2:-}
  mkdir -p "$DIR/$name"
  HTTP=$(free_port); GRPC=$(free_port); GRPCC=$(free_port)
  cat > "$DIR/$name/lodestar.yaml" <<YAML
runtime_dir: $DIR/$name/run
logging: {level: warn}
store:
  embedded: {data_dir: $DIR/$name/pg}
$hc
listeners:
  - {name: polaris-http, protocol: polaris-http, address: 127.0.0.1, port: $HTTP}
  - {name: polaris-grpc-naming, protocol: polaris-grpc, address: 127.0.0.1, port: $GRPC}
  - {name: polaris-grpc-config, protocol: polaris-grpc, address: 127.0.0.1, port: $GRPCC}
YAML
  "$BIN/lodestar" -c "$DIR/$name/lodestar.yaml" > "$DIR/$name/lodestar.log" 2>&1 &
  LPID=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null || { tail -30 "$DIR/$name/lodestar.log"; exit 1; }
  "$BIN/lodestar-bench" preload "127.0.0.1:$GRPC" "$SERVICES" "$INSTANCES" > /dev/null
  sleep 1 # every replica has the last registrations
}

stop_lodestar() {
  kill -TERM "$LPID"; wait "$LPID" 2>/dev/null || true; LPID=""
}

rate() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2" | tail -1; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); ${SECS}s per run; $((SERVICES * INSTANCES)) instances;" \
     "BatchHeartbeat: $STREAMS streams x $BATCH beats"

# ---- memory store
start_lodestar memory
"$BIN/lodestar-bench" heartbeat "127.0.0.1:$GRPC" 64 "$SECS" "$SERVICES" "$INSTANCES" | sed 's/^/memory: /'
MEM=$("$BIN/lodestar-bench" batch-heartbeat "127.0.0.1:$GRPC" "$STREAMS" "$SECS" "$SERVICES" "$INSTANCES" "$BATCH")
sed 's/^/memory: /' <<<"$MEM"
stop_lodestar

# ---- Redis store
SOCK=$DIR/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly no \
  --dir "$DIR" --logfile "$DIR/redis.log" --daemonize no &
RPID=$!
for _ in $(seq 1 100); do redis-cli -s "$SOCK" ping >/dev/null 2>&1 && break; sleep 0.05; done
start_lodestar redis "healthcheck:
  store: redis
  redis: {address: \"unix:$SOCK\"}"
RED=$("$BIN/lodestar-bench" batch-heartbeat "127.0.0.1:$GRPC" "$STREAMS" "$SECS" "$SERVICES" "$INSTANCES" "$BATCH")
sed 's/^/redis: /' <<<"$RED"
HB=$(redis-cli -s "$SOCK" hlen lodestar:hb)
stop_lodestar
SET=$(redis-benchmark -s "$SOCK" -t set -n 1000000 -c 50 -q 2>/dev/null | tr '\r' '\n' | grep '^SET:' | tail -1)
echo "redis: redis-benchmark -s $SOCK -t set -n 1000000 -c 50: $SET"
echo "redis: lodestar:hb holds $HB instances' beats"
m=$(rate beats_per_s "$MEM"); r=$(rate beats_per_s "$RED")
s=$(sed -n 's/^SET: \([0-9]*\).*/\1/p' <<<"$SET")
echo "memory BatchHeartbeat: $m beats/s (target >= 50000)"
echo "redis BatchHeartbeat: $r beats/s = $(( 100 * r / (s > 0 ? s : 1) ))% of redis-benchmark SET $s/s (target >= 50%)"

# ---- the wheel
"$BIN/lodestar-health-wheel" 100000 300 5 30 1000 30000
"$BIN/lodestar-health-wheel" 100000 300 5 300 100 30000
