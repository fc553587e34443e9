#!/usr/bin/env bash
# infra/local/up.sh: a dagstudy stack on one machine, without containers.
#
#   PostgreSQL  (initdb into $RUN_DIR/postgres; databases optuna and mlflow; generated password)
#   MLflow      (tracking server backed by that PostgreSQL; artifacts under $RUN_DIR)
#   Ray head    (unless --no-ray; token auth off explicitly: it binds loopback only by default)
#
# RUN_DIR is ${DAGSTUDY_HOME:-./dagstudy-runs}. Everything binds 127.0.0.1 unless --host says
# otherwise. Running it again is safe: a piece that is already running (pidfile + health) is
# left alone. It prints the environment to export and writes it to $RUN_DIR/stack.env (0600).
# Stop with infra/local/down.sh (data stays; --purge removes it).
#
# Usage: up.sh [--host ADDR] [--pg-port N] [--mlflow-port N] [--ray-port N]
#              [--ray-dashboard-port N] [--num-cpus N] [--no-ray]
set -euo pipefail

HOST=127.0.0.1
PG_PORT=55432
MLFLOW_PORT=5055
RAY_PORT=6380
RAY_DASHBOARD_PORT=8266
NUM_CPUS=$(nproc)
WITH_RAY=1

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --host) HOST=$2; shift 2 ;;
        --pg-port) PG_PORT=$2; shift 2 ;;
        --mlflow-port) MLFLOW_PORT=$2; shift 2 ;;
        --ray-port) RAY_PORT=$2; shift 2 ;;
        --ray-dashboard-port) RAY_DASHBOARD_PORT=$2; shift 2 ;;
        --num-cpus) NUM_CPUS=$2; shift 2 ;;
        --no-ray) WITH_RAY=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "up.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "up.sh: $*" >&2; }
die() { echo "up.sh: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
# PostgreSQL binaries: PATH first, then the Debian package's directory.
PG_BIN=""
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v pg_ctl)")
else
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && PG_BIN=$d
    done
fi
[ -n "$PG_BIN" ] || die "initdb/pg_ctl not found (install PostgreSQL, e.g. postgresql-15)"
# Python tools from the same environment as this shell's python (the dagstudy venv).
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BIN_DIR=$(dirname "$PYTHON")
MLFLOW=${MLFLOW:-$BIN_DIR/mlflow}
RAY=${RAY:-$BIN_DIR/ray}
[ -x "$MLFLOW" ] || MLFLOW=$(command -v mlflow) || die "mlflow not found"

RUN_DIR=${DAGSTUDY_HOME:-./dagstudy-runs}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
STACK_DIR=$RUN_DIR/stack          # pidfiles, logs, secrets
PG_DATA=$RUN_DIR/postgres
ARTIFACTS=$RUN_DIR/mlflow-artifacts
mkdir -p "$STACK_DIR" "$ARTIFACTS"
chmod 0700 "$STACK_DIR"

# A pidfile names a live process.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# A TCP port accepts connections.
port_open() { "$PYTHON" - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

# --- secrets -----------------------------------------------------------------------------------
# The PostgreSQL password: generated once, kept mode 0600 (never a default, never on a command
# line: initdb reads it from --pwfile, clients from PGPASSWORD).
PW_FILE=$STACK_DIR/postgres_password
if [ ! -s "$PW_FILE" ]; then
    (umask 077; openssl rand -hex 16 >"$PW_FILE")
fi
chmod 0600 "$PW_FILE"
PGPASSWORD=$(cat "$PW_FILE")
export PGPASSWORD
PG_USER=dagstudy

# PostgreSQL refuses to run as root: then it runs as the 'postgres' system user, which owns the
# data directory (every parent of RUN_DIR must be traversable by it).
AS_PG=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' system user"
    AS_PG=(runuser -u postgres --)
fi

# --- PostgreSQL --------------------------------------------------------------------------------
PG_PIDFILE=$PG_DATA/postmaster.pid      # written by postgres itself; line 1 is its PID
if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initdb $PG_DATA"
    mkdir -p "$PG_DATA"
    # initdb reads the superuser password from a file the postgres user can read (removed after).
    pwtmp=$PG_DATA.pw
    (umask 077; cp "$PW_FILE" "$pwtmp")
    if [ ${#AS_PG[@]} -gt 0 ]; then chown postgres: "$PG_DATA" "$pwtmp"; fi
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pwtmp" \
        --auth=scram-sha-256 -E UTF8 >"$STACK_DIR/initdb.log" 2>&1 \
        || { rm -f "$pwtmp"; die "initdb failed, see $STACK_DIR/initdb.log"; }
    rm -f "$pwtmp"
fi
if [ -f "$PG_PIDFILE" ] && kill -0 "$(head -n1 "$PG_PIDFILE")" 2>/dev/null \
        && port_open "$HOST" "$PG_PORT"; then
    log "PostgreSQL already running (pid $(head -n1 "$PG_PIDFILE"))"
else
    port_open "$HOST" "$PG_PORT" && die "port $HOST:$PG_PORT is taken by another process (--pg-port)"
    log "starting PostgreSQL on $HOST:$PG_PORT"
    # listen only on HOST; the unix socket lives in the data directory, not /var/run.
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 \
        -o "-c listen_addresses=$HOST -p $PG_PORT -c unix_socket_directories=$PG_DATA" start \
        >/dev/null || die "PostgreSQL did not start, see $PG_DATA/server.log"
fi
# The two databases (created once; psql gets the password from PGPASSWORD).
for db in optuna mlflow; do
    exists=$(psql -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'")
    if [ "$exists" != 1 ]; then
        log "creating database $db"
        psql -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $db" >/dev/null
    fi
done

# URLs name the driver and hold no password (libpq reads PGPASSWORD).
URL_HOST=$HOST
case "$HOST" in *:*) URL_HOST="[$HOST]" ;; esac
OPTUNA_URL="postgresql+psycopg2://$PG_USER@$URL_HOST:$PG_PORT/optuna"
MLFLOW_DB_URL="postgresql+psycopg2://$PG_USER@$URL_HOST:$PG_PORT/mlflow"
MLFLOW_URI="http://$URL_HOST:$MLFLOW_PORT"

# --- MLflow ------------------------------------------------------------------------------------
MLFLOW_PIDFILE=$STACK_DIR/mlflow.pid
mlflow_healthy() { "$PYTHON" - "$MLFLOW_URI/health" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}
if alive "$MLFLOW_PIDFILE" && mlflow_healthy; then
    log "MLflow already running (pid $(cat "$MLFLOW_PIDFILE"))"
else
    port_open "$HOST" "$MLFLOW_PORT" \
        && die "port $HOST:$MLFLOW_PORT is taken by another process (--mlflow-port)"
    log "starting MLflow on $MLFLOW_URI"
    # setsid: its own process group, so down.sh can stop the server and its workers together.
    # The password reaches it through PGPASSWORD (exported above), not the URI.
    setsid "$MLFLOW" server \
        --backend-store-uri "$MLFLOW_DB_URL" \
        --artifacts-destination "$ARTIFACTS" \
        --host "$HOST" --port "$MLFLOW_PORT" --workers 2 \
        --allowed-hosts "$URL_HOST:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
        </dev/null >"$STACK_DIR/mlflow.log" 2>&1 &
    echo $! >"$MLFLOW_PIDFILE"
    # The first start migrates the database schema: allow a couple of minutes.
    for _ in $(seq 240); do
        mlflow_healthy && break
        alive "$MLFLOW_PIDFILE" || die "MLflow exited, see $STACK_DIR/mlflow.log"
        sleep 0.5
    done
    mlflow_healthy || die "MLflow not healthy after 120 s, see $STACK_DIR/mlflow.log"
fi

# --- Ray head ----------------------------------------------------------------------------------
RAY_PIDFILE=$STACK_DIR/ray.pid
RAY_ADDRESS_VALUE=""
if [ "$WITH_RAY" = 1 ]; then
    [ -x "$RAY" ] || RAY=$(command -v ray) || die "ray not found (or use --no-ray)"
    RAY_ADDRESS_VALUE="$URL_HOST:$RAY_PORT"
    if alive "$RAY_PIDFILE" && port_open "$HOST" "$RAY_PORT"; then
        log "Ray head already running (pid $(cat "$RAY_PIDFILE"))"
    else
        port_open "$HOST" "$RAY_PORT" && die "port $HOST:$RAY_PORT is taken (--ray-port)"
        log "starting Ray head on $RAY_ADDRESS_VALUE"
        # --block keeps `ray start` in the foreground as the owner of the head's processes; it
        # runs in its own session (setsid) so down.sh stops exactly this process group, never
        # other Ray clusters on the machine (no `ray stop`). RAY_AUTH_MODE is set explicitly:
        # Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists.
        RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} setsid "$RAY" start --head --block \
            --node-ip-address "$HOST" --port "$RAY_PORT" --num-cpus "$NUM_CPUS" \
            --dashboard-host "$HOST" --dashboard-port "$RAY_DASHBOARD_PORT" \
            --temp-dir "$RUN_DIR/ray-tmp" --disable-usage-stats \
            </dev/null >"$STACK_DIR/ray.log" 2>&1 &
        echo $! >"$RAY_PIDFILE"
        for _ in $(seq 120); do
            port_open "$HOST" "$RAY_PORT" && break
            alive "$RAY_PIDFILE" || die "Ray exited, see $STACK_DIR/ray.log"
            sleep 0.5
        done
        port_open "$HOST" "$RAY_PORT" || die "Ray head not up after 60 s, see $STACK_DIR/ray.log"
    fi
fi

# --- the environment to export -----------------------------------------------------------------
ENV_FILE=$RUN_DIR/stack.env
(
    umask 077
    {
        echo "# written by infra/local/up.sh; source it: set -a; . $ENV_FILE; set +a"
        echo "DAGSTUDY_HOME=$RUN_DIR"
        echo "DAGSTUDY_OPTUNA_STORAGE=$OPTUNA_URL"
        echo "MLFLOW_TRACKING_URI=$MLFLOW_URI"
        echo "PGPASSWORD=$PGPASSWORD"
        [ -z "$RAY_ADDRESS_VALUE" ] || echo "RAY_ADDRESS=$RAY_ADDRESS_VALUE"
        [ -z "$RAY_ADDRESS_VALUE" ] || echo "RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}"
    } >"$ENV_FILE"
)
chmod 0600 "$ENV_FILE"
log "stack up; environment written to $ENV_FILE (mode 0600, holds PGPASSWORD)"
# The exports, for eval "$(infra/local/up.sh)"; the password is read from its file.
echo "export DAGSTUDY_HOME='$RUN_DIR'"
echo "export DAGSTUDY_OPTUNA_STORAGE='$OPTUNA_URL'"
echo "export MLFLOW_TRACKING_URI='$MLFLOW_URI'"
echo "export PGPASSWORD=\"\$(cat '$PW_FILE')\""
[ -z "$RAY_ADDRESS_VALUE" ] || echo "export RAY_ADDRESS='$RAY_ADDRESS_VALUE'"
[ -z "$RAY_ADDRESS_VALUE" ] || echo "export RAY_AUTH_MODE='${RAY_AUTH_MODE:-disabled}'"
