# Shared set-up for scripts/demo and scripts/test: install what is missing, start what must run,
# and remember what we started so `cleanup` stops exactly that. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA_DIR="${VL_DATA_DIR:-$ROOT/.data}"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/volume-lifecycle"
mkdir -p "$DATA_DIR" "$CACHE_DIR/bin"

STARTED_PIDS=()
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

# Debian packages the project drives for real (nbd servers and client, the lab's QEMU and kernel,
# device-mapper tools, the CloudStack CLI used as a conformance client, Chromium for the UI test).
DEB_PACKAGES=(nbd-server nbdkit libnbd-bin python3-libnbd qemu-system-x86 qemu-utils qemu-guest-agent linux-image-amd64 udev xz-utils util-linux procps
  busybox-static socat dmsetup cs chromium)

ensure_packages() {
  local missing=() p
  for p in "${DEB_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_node_modules() {
  command -v node >/dev/null || die "node (>= 20.19) is required: apt-get install nodejs npm"
  if [ ! -d "$ROOT/node_modules/@temporalio/worker" ] || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "npm ci"
    # Some registries lack the other platforms' optional builds (e.g. @swc/core-darwin-*), so no
    # lock file made there can list them and `npm ci` refuses; `npm install` still installs
    # exactly the locked versions of everything else.
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error 2>/dev/null) ||
      { log "npm ci refused the lock file (optional platform builds missing); npm install from it"; (cd "$ROOT" && npm install --no-audit --no-fund --loglevel=error); }
  fi
}

# The Temporal CLI: from PATH if present, else built once from source into the cache (v1.5.1 is the
# last tag that `go install` accepts; later ones carry a replace directive).
TEMPORAL_BIN=""
ensure_temporal_cli() {
  if command -v temporal >/dev/null; then TEMPORAL_BIN="$(command -v temporal)"; return; fi
  TEMPORAL_BIN="$CACHE_DIR/bin/temporal"
  [ -x "$TEMPORAL_BIN" ] && return
  command -v go >/dev/null || die "no temporal on PATH and no Go toolchain to build it (install Go, or the Temporal CLI)"
  log "building the Temporal CLI v1.5.1 into $CACHE_DIR/bin (once; ~3 minutes)"
  (cd "$CACHE_DIR" && GOBIN="$CACHE_DIR/bin" go install github.com/temporalio/cli/cmd/temporal@v1.5.1)
}

# The search attributes the workflows upsert, from their one definition (needs node_modules).
search_attributes() { (cd "$ROOT" && node --import tsx src/temporal/print-search-attributes.ts); }

# The dev server, configured for this workload (README "Temporal server settings"). Its one
# history shard reads its transfer queue at most 20 times a second by default, and every remote
# activity costs two reads (its task, then the workflow task after it): ~100 ms per step no matter
# how fast the step is. And SQLite in WAL mode with synchronous=normal commits without an fsync
# per transaction: a power loss can lose the last commits, a process crash loses nothing.
TEMPORAL_TUNING=(
  --dynamic-config-value history.transferProcessorMaxPollRPS=1000
  --dynamic-config-value history.timerProcessorMaxPollRPS=1000
  --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal
)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_temporal PORT UI_PORT DBFILE [fresh]: reuse a server already answering on PORT, else start
# one (with `fresh`, on an empty state file: never delete the file of a server that is running).
start_temporal() {
  local port="$1" ui_port="$2" db="$3" fresh="${4:-}" args=() sa
  ensure_temporal_cli
  if port_open "$port"; then log "Temporal already listening on 127.0.0.1:$port (reusing it)"; return; fi
  for sa in $(search_attributes); do args+=(--search-attribute "$sa"); done
  [ ${#args[@]} -gt 0 ] || die "no search attributes to register (src/temporal/search-attributes.ts)"
  mkdir -p "$(dirname "$db")"
  if [ "$fresh" = fresh ]; then rm -f "$db"; fi
  log "starting Temporal dev server on 127.0.0.1:$port (UI http://127.0.0.1:$ui_port, state $db)"
  # setsid: a process group of its own, so a Ctrl-C at the terminal reaches the demo, which
  # stops its workers first; `cleanup` stops the server after them.
  setsid "$TEMPORAL_BIN" server start-dev --ip 127.0.0.1 --port "$port" --ui-port "$ui_port" \
    --db-filename "$db" --log-level warn "${args[@]}" \
    --dynamic-config-value system.forceSearchAttributesCacheRefreshOnRead=true \
    --dynamic-config-value frontend.enableUpdateWorkflowExecution=true \
    --dynamic-config-value frontend.enableExecuteMultiOperation=true \
    "${TEMPORAL_TUNING[@]}" \
    >"$DATA_DIR/temporal-$port.log" 2>&1 &
  STARTED_PIDS+=($!)
  for _ in $(seq 600); do
    if "$TEMPORAL_BIN" operator cluster health --address "127.0.0.1:$port" >/dev/null 2>&1; then return; fi
    kill -0 "${STARTED_PIDS[-1]}" 2>/dev/null || { tail -20 "$DATA_DIR/temporal-$port.log" >&2; die "Temporal dev server exited"; }
    sleep 0.2
  done
  die "Temporal dev server did not become healthy on port $port"
}

# MySQL: the one at 127.0.0.1:3306 if it answers, else a private mariadbd on a data dir of ours.
ensure_mysql() {
  export DB_HOST="${DB_HOST:-127.0.0.1}" DB_PORT="${DB_PORT:-3306}" DB_USER="${DB_USER:-root}" DB_PASSWORD="${DB_PASSWORD:-}"
  command -v mariadb >/dev/null || ensure_packages mariadb-client
  if mysql_answers; then return; fi
  if [ "$DB_HOST" != 127.0.0.1 ] || [ "$DB_PORT" != 3306 ]; then die "database at $DB_HOST:$DB_PORT does not answer"; fi
  command -v mariadbd >/dev/null || ensure_packages mariadb-server
  local dir="$DATA_DIR/mariadb" port=3307 sock
  sock="$dir/mysqld.sock"
  if [ ! -d "$dir/mysql" ]; then
    log "initialising a private MariaDB in $dir"
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --datadir="$dir" --auth-root-authentication-method=normal --user="$(id -un)" >/dev/null
  fi
  log "starting a private MariaDB on 127.0.0.1:$port"
  mariadbd --no-defaults --datadir="$dir" --socket="$sock" --port=$port --bind-address=127.0.0.1 \
    --user="$(id -un)" --skip-log-bin --pid-file="$dir/mysqld.pid" >"$DATA_DIR/mariadb.log" 2>&1 &
  STARTED_PIDS+=($!)
  export DB_PORT=$port
  for _ in $(seq 300); do mysql_answers && return; sleep 0.2; done
  die "private MariaDB did not start (see $DATA_DIR/mariadb.log)"
}
mysql_answers() {
  command -v mariadb >/dev/null || return 1
  MYSQL_PWD="$DB_PASSWORD" mariadb --protocol=TCP -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" -e 'SELECT 1' >/dev/null 2>&1
}
