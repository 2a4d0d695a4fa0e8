#!/usr/bin/env bash
# Lodestar developer entry point: the README's two commands.
#
#   ./dev.sh run    install what is missing, build, run on the embedded default
#   ./dev.sh test   install what is missing, build with ASan+UBSan, run every test
#
# Works as root on a fresh Debian 12 (packages come from apt-get and npm only;
# npm only for the interop tests' client libraries, tests/interop).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

DEBIAN_PACKAGES=(
  build-essential cmake pkg-config git
  libevent-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libgrpc-dev
  libpq-dev libhiredis-dev libyaml-dev libjansson-dev libsystemd-dev libcriterion-dev libssl-dev
  uthash-dev libxml2-dev postgresql-15 redis-server
  python3 python3-grpcio
)

log() { printf '==> %s\n' "$*" >&2; }

install_missing() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing Debian packages: ${missing[*]}; run as root (or install them) first" >&2
      exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The Debian postgresql package starts a cluster of its own; Lodestar runs
  # a private one, so the distribution's is not needed (and stays untouched).
}

# The interop tests (tests/interop) drive Lodestar with real client
# libraries from npm: Node.js and npm come from Debian when missing, and the
# pinned packages are (re)installed with `npm ci` whenever node_modules is
# absent or package-lock.json changed since the last install.
install_node() {
  local missing=()
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "missing: ${missing[*]} (for the interop tests); run as root (or install them) first" >&2
      exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_interop_clients() {
  local dir="$ROOT/tests/interop"
  local stamp="$dir/node_modules/.lodestar-lock.sha256"
  local want have=""
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  [ -f "$stamp" ] && have=$(cat "$stamp")
  if [ "$want" != "$have" ]; then
    log "installing the interop test clients (npm ci in tests/interop)"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}

build() { # build DIR extra-cmake-args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

case "${1:-}" in
  run)
    install_missing
    build "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLODESTAR_TESTS=OFF
    log "starting lodestar on deploy/lodestar.yaml (private PostgreSQL, in-memory heartbeats); Ctrl-C stops it"
    exec "$ROOT/build/bin/lodestar" -c "$ROOT/deploy/lodestar.yaml"
    ;;
  test)
    install_missing
    install_node
    install_interop_clients
    build "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DLODESTAR_SANITIZE=ON -DLODESTAR_TESTS=ON
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    if [ -f "$ROOT/tests/lsan.supp" ]; then
      export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
    fi
    cd "$ROOT/build-asan"
    ctest --output-on-failure --timeout 600 -j2
    ;;
  *)
    echo "usage: $0 run | test" >&2
    exit 2
    ;;
esac
