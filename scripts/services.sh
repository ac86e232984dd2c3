#!/usr/bin/env bash
# The pipeline's real services, for tests and local runs:
#
#   scripts/services.sh up       install what is missing, start, configure, wait until ready
#   scripts/services.sh status   say what runs
#   scripts/services.sh down     stop what this script started
#   scripts/services.sh env      print the settings file to `source`
#   scripts/services.sh stop-s3  stop garage only (fault injection; `up` starts it again)
#   scripts/services.sh stop-kafka        stop tansu only (fault injection; `up` starts
#                                         it again on the same log)
#   scripts/services.sh restart-postgres  restart the machine's PostgreSQL cluster on
#                                         port 5432 (fault injection; needs root)
#
# - PostgreSQL: already running on every machine (127.0.0.1:5432, trust auth); only checked.
# - S3: garage 2.5.0 (AGPL, run as a separate server, never linked), single node,
#   replication_factor 1, sqlite metadata, S3 API on 127.0.0.1:3900. Buckets:
#   proctor-jobs (job objects), proctor-reference (reference outputs).
# - Kafka API: tansu 0.6.0 on 127.0.0.1:9092, storing its log in SQLite
#   ($STATE/tansu-log.db). Its S3 engine on garage loses acknowledged records on every
#   restart (measured: docs/OPERATIONS.md, "The stand-in broker"), so it is not used.
#
# Binaries are built once per machine into ~/.cache/proctor/<tool>-<version> (tansu
# 12-19 min, garage ~15 CPU-min on 2 cores) and reused while the version matches.
# Credentials are generated per machine into the state folder; none is committed.
set -euo pipefail

CACHE="${PROCTOR_CACHE:-$HOME/.cache/proctor}"
STATE="${PROCTOR_SERVICES_DIR:-$CACHE/services}"
# tansu's storage engine: SQLite, a path relative to the directory tansu starts in,
# which is $STATE. PROCTOR_TANSU_STORAGE picks another for an experiment
# (docs/OPERATIONS.md, "The stand-in broker"); `s3://proctor-kafka/` is the garage
# engine the services ran on before, which the workers no longer recover from.
TANSU_STORAGE="${PROCTOR_TANSU_STORAGE:-sqlite://tansu-log.db}"
TANSU_VERSION=0.6.0
# libsql (the SQLite engine the services run on, and the only one built here that
# stores SCRAM users: tests/kafka_security.rs runs its authenticating broker on it),
# dynostore (the S3 engine) and postgres, kept for the measurements docs/OPERATIONS.md
# records.
TANSU_FEATURES=postgres,dynostore,libsql
GARAGE_VERSION=2.5.0
TANSU="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
GARAGE="$CACHE/garage-$GARAGE_VERSION/bin/garage"
S3_PORT="${PROCTOR_S3_PORT:-3900}"
RPC_PORT="${PROCTOR_GARAGE_RPC_PORT:-3901}"
ADMIN_PORT="${PROCTOR_GARAGE_ADMIN_PORT:-3903}"
KAFKA_PORT="${PROCTOR_KAFKA_PORT:-9092}"
REGION=garage
BUCKETS=(proctor-jobs proctor-reference)
# The S3 engine's bucket, only when an experiment asks for that engine.
case "$TANSU_STORAGE" in s3://*) BUCKETS+=("$(cut -d/ -f3 <<< "$TANSU_STORAGE")") ;; esac
# topic:partitions
TOPICS=(proctor.jobs:4 proctor.rerun:4 proctor.dlq:1 ledger.slashes:4 proctor.audit:1)

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    port_open "$1" && return 0
    sleep 0.2
  done
  die "$2 did not open 127.0.0.1:$1 within $3 s (log: $STATE/$2.log)"
}

install() {
  # The build's features are written beside it: a build with other features is rebuilt.
  local features="$CACHE/tansu-$TANSU_VERSION/features"
  if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q " $TANSU_VERSION\$" \
    && [ "$(cat "$features" 2>/dev/null)" = "$TANSU_FEATURES" ]; then
    log "tansu $TANSU_VERSION ($TANSU_FEATURES): installed"
  else
    log "tansu $TANSU_VERSION ($TANSU_FEATURES): building (15-20 minutes on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
      --root "$CACHE/tansu-$TANSU_VERSION" --quiet --force
    echo "$TANSU_FEATURES" > "$features"
  fi
  if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; then
    log "garage $GARAGE_VERSION: installed"
  else
    log "garage $GARAGE_VERSION: building (about 15 CPU-minutes)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$CACHE/garage-$GARAGE_VERSION" --quiet
  fi
}

check_postgres() {
  port_open 5432 || die "PostgreSQL is not listening on 127.0.0.1:5432 (start it with: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)"
  log "postgres: listening on 127.0.0.1:5432"
}

# Per-machine secrets, made once.
secrets() {
  mkdir -p "$STATE"
  if [ ! -f "$STATE/secrets" ]; then
    umask 077
    {
      echo "RPC_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "ADMIN_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "S3_KEY_ID=GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "S3_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    } > "$STATE/secrets"
  fi
  # shellcheck disable=SC1091
  source "$STATE/secrets"
}

garage_config() {
  cat > "$STATE/garage.toml" <<EOF
metadata_dir = "$STATE/garage/meta"
data_dir = "$STATE/garage/data"
db_engine = "sqlite"
# Job outputs are PNG/JPEG and already compressed: zstd on every block only costs the
# server CPU on the same cores as the workers.
compression_level = "none"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$ADMIN_TOKEN"
EOF
}

g() { "$GARAGE" -c "$STATE/garage.toml" "$@"; }

# Right after `layout apply` garage answers "Layout not ready" for a moment (seen on a
# fresh machine): retry a configuration command for up to 30 s.
g_retry() {
  local i
  for ((i = 0; i < 60; i++)); do
    if g "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  g "$@" > /dev/null
}

start_garage() {
  if port_open "$S3_PORT"; then
    log "garage: already listening on 127.0.0.1:$S3_PORT"
  else
    mkdir -p "$STATE/garage/meta" "$STATE/garage/data"
    garage_config
    # garage logs every request at info: megabytes per test run, and CPU on the cores
    # the workers share. Warnings and errors only (PROCTOR_GARAGE_LOG to change).
    RUST_LOG="${PROCTOR_GARAGE_LOG:-warn}" setsid nohup "$GARAGE" -c "$STATE/garage.toml" server \
      > "$STATE/garage.log" 2>&1 < /dev/null &
    echo $! > "$STATE/garage.pid"
    wait_port "$RPC_PORT" garage 30
    wait_port "$S3_PORT" garage 30
  fi
  # One node holding every partition; applied once.
  # The RPC port opens before the node answers: wait for a layout, then apply one if
  # none is (a fresh machine's first start).
  local layout="" i
  for ((i = 0; i < 60; i++)); do
    if layout=$(g layout show 2>/dev/null); then break; fi
    sleep 0.5
  done
  [ -n "$layout" ] || die "garage does not answer 'layout show' (log: $STATE/garage.log)"
  if grep -q "No nodes currently have a role" <<< "$layout"; then
    local node
    node=$(g node id -q 2>/dev/null | cut -c1-16)
    g layout assign -z dc1 -c 1G "$node" > /dev/null
    g layout apply --version 1 > /dev/null
    log "garage: layout applied"
  fi
  if ! g key info proctor > /dev/null 2>&1; then
    g_retry key import --yes -n proctor "$S3_KEY_ID" "$S3_SECRET"
  fi
  local b
  for b in "${BUCKETS[@]}"; do
    if ! g bucket info "$b" > /dev/null 2>&1; then
      g_retry bucket create "$b"
    fi
    g_retry bucket allow --read --write --owner "$b" --key proctor
  done
  log "garage: ready on 127.0.0.1:$S3_PORT (buckets: ${BUCKETS[*]})"
}

start_tansu() {
  # A tansu this script started on another engine (an older checkout's S3 one, or an
  # experiment's) is stopped, and started again on this one.
  if port_open "$KAFKA_PORT" && [ -f "$STATE/tansu.pid" ] \
    && [ "$(cat "$STATE/tansu.storage" 2>/dev/null)" != "$TANSU_STORAGE" ]; then
    log "tansu: running on another engine ($(cat "$STATE/tansu.storage" 2>/dev/null || echo s3://proctor-kafka/)); restarting on $TANSU_STORAGE"
    stop tansu
  fi
  if port_open "$KAFKA_PORT"; then
    log "tansu: already listening on 127.0.0.1:$KAFKA_PORT"
  else
    AWS_ACCESS_KEY_ID="$S3_KEY_ID" AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_DEFAULT_REGION="$REGION" \
      AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true \
      setsid nohup env -C "$STATE" "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "$TANSU_STORAGE" > "$STATE/tansu.log" 2>&1 < /dev/null &
    echo $! > "$STATE/tansu.pid"
    echo "$TANSU_STORAGE" > "$STATE/tansu.storage"
    wait_port "$KAFKA_PORT" tansu 30
  fi
  local existing t name parts
  existing=$("$TANSU" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null || true)
  for t in "${TOPICS[@]}"; do
    name=${t%%:*}
    parts=${t##*:}
    if ! grep -qF -- "\"name\":\"$name\"" <<< "$existing"; then
      "$TANSU" topic create --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions "$parts" "$name" > /dev/null
    fi
  done
  log "tansu: ready on 127.0.0.1:$KAFKA_PORT ($TANSU_STORAGE; topics: ${TOPICS[*]})"
}

write_env() {
  # Names follow the settings layering (src/settings.rs): PROCTOR_<SECTION>__<KEY>.
  cat > "$STATE/env" <<EOF
export PROCTOR_DATABASE__URL=postgres://postgres@127.0.0.1:5432/postgres
export PROCTOR_KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT
export PROCTOR_KAFKA__COMPAT=tansu-0.6
export PROCTOR_KAFKA__IDEMPOTENCE=false
export PROCTOR_KAFKA__REPLICATION_FACTOR=1
export PROCTOR_S3__ENDPOINT=http://127.0.0.1:$S3_PORT
export PROCTOR_S3__REGION=$REGION
export PROCTOR_S3__ACCESS_KEY_ID=$S3_KEY_ID
export PROCTOR_S3__SECRET_ACCESS_KEY=$S3_SECRET
export PROCTOR_S3__JOBS_BUCKET=proctor-jobs
export PROCTOR_S3__REFERENCE_BUCKET=proctor-reference
# Not a setting (no double underscore): the broker binary, for tests/kafka_security.rs.
export PROCTOR_SERVICES_TANSU=$TANSU
EOF
  chmod 600 "$STATE/env"
}

stop() { # name
  local pidfile="$STATE/$1.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    local pid
    pid=$(cat "$pidfile")
    kill "$pid"
    # Wait for it to exit, so that an `up` right after finds its ports free.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "$1: stopped"
  fi
  rm -f "$pidfile"
}

status() {
  local ok=0
  port_open 5432 && log "postgres: up" || { log "postgres: DOWN"; ok=1; }
  port_open "$S3_PORT" && log "garage: up (127.0.0.1:$S3_PORT)" || { log "garage: down"; ok=1; }
  port_open "$KAFKA_PORT" && log "tansu: up (127.0.0.1:$KAFKA_PORT)" || { log "tansu: down"; ok=1; }
  return $ok
}

case "${1:-}" in
  up)
    install
    check_postgres
    secrets
    start_garage
    start_tansu
    write_env
    log "settings: source $STATE/env"
    ;;
  down)
    stop tansu
    stop garage
    ;;
  stop-s3) stop garage ;; # fault injection: the back-pressure test stops S3, then runs `up`
  stop-kafka) stop tansu ;; # fault injection: scripts/chaos
  restart-postgres) # fault injection: scripts/chaos
    cluster=$(pg_lsclusters --no-header | awk '$3 == 5432 { print $1, $2; exit }')
    [ -n "$cluster" ] || die "no PostgreSQL cluster on port 5432"
    # shellcheck disable=SC2086
    pg_ctlcluster $cluster restart
    log "postgres: restarted ($cluster)"
    ;;
  status) status ;;
  env) echo "$STATE/env" ;;
  *) echo "usage: $0 up|down|status|env|stop-s3|stop-kafka|restart-postgres" >&2; exit 2 ;;
esac
