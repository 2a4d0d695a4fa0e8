#!/usr/bin/env bash
# Config benchmark, one command: starts Lodestar on a private PostgreSQL in a
# temporary directory, publishes one file, then measures (load generator on
# the same machine):
#   read       GetConfigFile over gRPC (config port) and over HTTP
#   watch      WATCHERS long polls (WatchConfigFiles over gRPC, many calls per
#              HTTP/2 connection) held by the one gateway, VmRSS of every
#              Lodestar process before and after (each process that moved by
#              1 MiB or more on its own line), then one publish, the time
#              from the release request to each watcher's answer, and the
#              CPU time Lodestar and the load generator used meanwhile
#
#   bench/config_watch.sh [BUILD_DIR] [SECONDS] [WATCHERS...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
SECS=${2:-10}
shift 2 || true
WATCHERS=("$@")
[ ${#WATCHERS[@]} -gt 0 ] || WATCHERS=(10000 100000)
BIN=$BUILD/bin
[ -x "$BIN/lodestar-config-bench" ] || { echo "build first: cmake --build $BUILD (missing $BIN/lodestar-config-bench)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d /tmp/lodestar-cbench-XXXXXX)
chmod 755 "$DIR"
HTTP=$(free_port); GRPC=$(free_port); GRPCC=$(free_port)
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
LPID=""
cleanup() {
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
curl -sf -X POST "http://127.0.0.1:$HTTP/config/v1/configfiles/createandpub" \
  -d '{"namespace":"default","group":"bench","file_name":"app.properties","content":"a=1\nb=2\n","format":"properties"}' >/dev/null
sleep 0.5

# every Lodestar process: the supervisor, its children, and PostgreSQL's
PIDS="$LPID $(pgrep -P "$LPID" | tr '\n' ' ' || true)"
for p in $(pgrep -P "$LPID" || true); do PIDS="$PIDS $(pgrep -P "$p" | tr '\n' ' ' || true)"; done
export LODESTAR_PIDS="$PIDS"

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); ${SECS}s per read run"
"$BIN/lodestar-config-bench" read "127.0.0.1:$GRPCC" 64 "$SECS" bench app.properties
"$BIN/lodestar-config-bench" http-read "$HTTP" 64 "$SECS" bench app.properties
for n in "${WATCHERS[@]}"; do
  ch=$(( n / 1000 )); [ "$ch" -ge 1 ] || ch=1; [ "$ch" -le 100 ] || ch=100
  "$BIN/lodestar-config-bench" watch "127.0.0.1:$GRPCC" "$HTTP" "$n" "$ch" bench app.properties || true
  sleep 2
done
