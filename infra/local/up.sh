#!/usr/bin/env bash
# infra/local/up.sh: a dagstudy stack on one machine, without containers.
#
#   PostgreSQL  (initdb into $RUN_DIR/postgres; databases optuna and mlflow, and mlflow_auth
#               with --mlflow-auth; generated password)
#   MLflow      (tracking server backed by that PostgreSQL; artifacts under $RUN_DIR)
#   Ray head    (unless --no-ray; token auth off explicitly: it binds loopback only by default)
#
# RUN_DIR is ${DAGSTUDY_HOME:-./dagstudy-runs}. Everything binds 127.0.0.1 unless --host says
# otherwise. Running it again is safe: a piece that is already running (pidfile + health) is
# left alone. It prints the environment to export and writes it to $RUN_DIR/stack.env (0600).
# Stop with infra/local/down.sh (data stays; --purge removes it).
#
# --mlflow-auth runs MLflow's basic-auth app (--app-name basic-auth): at its first setup an admin
# password and a Flask secret key are generated into $RUN_DIR/stack/ (0600), the user store is
# the PostgreSQL database mlflow_auth, and the exports add MLFLOW_TRACKING_USERNAME=admin and
# MLFLOW_TRACKING_PASSWORD. Once set up, auth stays on for this RUN_DIR (later runs need not
# repeat the flag; only down.sh --purge turns it off). A running MLflow of the other mode is
# never restarted silently: up.sh stops with an error (run down.sh first).
#
# Usage: up.sh [--host ADDR] [--pg-port N] [--mlflow-port N] [--ray-port N]
#              [--ray-dashboard-port N] [--num-cpus N] [--no-ray] [--mlflow-auth]
set -euo pipefail

HOST=127.0.0.1
PG_PORT=55432
MLFLOW_PORT=5055
RAY_PORT=6380
RAY_DASHBOARD_PORT=8266
NUM_CPUS=$(nproc)
WITH_RAY=1
MLFLOW_AUTH=0

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --host) HOST=$2; shift 2 ;;
        --pg-port) PG_PORT=$2; shift 2 ;;
        --mlflow-port) MLFLOW_PORT=$2; shift 2 ;;
        --ray-port) RAY_PORT=$2; shift 2 ;;
        --ray-dashboard-port) RAY_DASHBOARD_PORT=$2; shift 2 ;;
        --num-cpus) NUM_CPUS=$2; shift 2 ;;
        --no-ray) WITH_RAY=0; shift ;;
        --mlflow-auth) MLFLOW_AUTH=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "up.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { echo "up.sh: $*" >&2; }
die() { echo "up.sh: $*" >&2; exit 1; }

case "$HOST" in
    127.*|::1|localhost) ;;
    *) log "warning: --host $HOST makes the stack reachable beyond this machine; the Ray head" \
           "has no auth here, and MLflow has it only with --mlflow-auth" ;;
esac

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

# MLflow basic auth: the admin password and the Flask secret key (CSRF) are generated when an
# auth server first starts (below) and kept; the password file's existence remembers the mode.
MLFLOW_ADMIN_USER=admin
MLFLOW_ADMIN_PW_FILE=$STACK_DIR/mlflow_admin_password
MLFLOW_SECRET_KEY_FILE=$STACK_DIR/mlflow_flask_secret_key
if [ "$MLFLOW_AUTH" = 0 ] && [ -s "$MLFLOW_ADMIN_PW_FILE" ]; then
    log "MLflow basic auth was set up in $RUN_DIR before: keeping it on"
    MLFLOW_AUTH=1
fi
WANT_MODE=none
[ "$MLFLOW_AUTH" = 0 ] || WANT_MODE=basic-auth

# URLs name the driver and hold no password (libpq reads PGPASSWORD).
URL_HOST=$HOST
case "$HOST" in *:*) URL_HOST="[$HOST]" ;; esac
OPTUNA_URL="postgresql+psycopg2://$PG_USER@$URL_HOST:$PG_PORT/optuna"
MLFLOW_DB_URL="postgresql+psycopg2://$PG_USER@$URL_HOST:$PG_PORT/mlflow"
MLFLOW_AUTH_DB_URL="postgresql+psycopg2://$PG_USER@$URL_HOST:$PG_PORT/mlflow_auth"
MLFLOW_URI="http://$URL_HOST:$MLFLOW_PORT"

MLFLOW_PIDFILE=$STACK_DIR/mlflow.pid
mlflow_healthy() { "$PYTHON" - "$MLFLOW_URI/health" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}
# Whether the MLflow server that answers runs basic auth: only then is a REST call without
# credentials refused with 401. Prints basic-auth, none, or unknown (not reachable).
mlflow_mode() { "$PYTHON" - "$MLFLOW_URI/api/2.0/mlflow/experiments/search?max_results=1" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
    print("none")
except urllib.error.HTTPError as e:
    print("basic-auth" if e.code == 401 else "none")
except OSError as e:
    print(f"unknown ({e})")
PY
}
# A running MLflow of the other mode is an error before anything changes (never a silent
# restart, never a server without the auth that was asked for). The mode it was started with is
# in mlflow.mode; probing is the fallback (it needs MLflow's database, so PostgreSQL may be down
# while MLflow is up, e.g. when up.sh restarts a stopped PostgreSQL).
MLFLOW_MODE_FILE=$STACK_DIR/mlflow.mode
MLFLOW_RUNNING=0
if alive "$MLFLOW_PIDFILE" && mlflow_healthy; then
    MLFLOW_RUNNING=1
    mode=$(cat "$MLFLOW_MODE_FILE" 2>/dev/null || mlflow_mode)
    [ "$mode" = "$WANT_MODE" ] || die "MLflow (pid $(cat "$MLFLOW_PIDFILE")) runs with auth" \
        "'$mode', not '$WANT_MODE'; stop it with infra/local/down.sh, then run up.sh again"
    if [ "$MLFLOW_AUTH" = 1 ] && [ ! -s "$MLFLOW_ADMIN_PW_FILE" ]; then
        die "MLflow runs with basic auth but $MLFLOW_ADMIN_PW_FILE is missing"
    fi
fi

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
# The databases (created once; psql gets the password from PGPASSWORD); mlflow_auth holds
# MLflow's users and permissions when basic auth is on.
DATABASES=(optuna mlflow)
[ "$MLFLOW_AUTH" = 0 ] || DATABASES+=(mlflow_auth)
for db in "${DATABASES[@]}"; do
    exists=$(psql -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'")
    if [ "$exists" != 1 ]; then
        log "creating database $db"
        psql -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE $db" >/dev/null
    fi
done

# --- MLflow ------------------------------------------------------------------------------------
if [ "$MLFLOW_RUNNING" = 1 ]; then
    log "MLflow already running (pid $(cat "$MLFLOW_PIDFILE"), auth: $WANT_MODE)"
else
    port_open "$HOST" "$MLFLOW_PORT" \
        && die "port $HOST:$MLFLOW_PORT is taken by another process (--mlflow-port)"
    log "starting MLflow on $MLFLOW_URI (auth: $WANT_MODE)"
    MLFLOW_ARGS=()
    MLFLOW_ENV=()
    if [ "$MLFLOW_AUTH" = 1 ]; then
        [ -s "$MLFLOW_ADMIN_PW_FILE" ] \
            || (umask 077; openssl rand -hex 16 >"$MLFLOW_ADMIN_PW_FILE")
        [ -s "$MLFLOW_SECRET_KEY_FILE" ] \
            || (umask 077; openssl rand -hex 32 >"$MLFLOW_SECRET_KEY_FILE")
        chmod 0600 "$MLFLOW_ADMIN_PW_FILE" "$MLFLOW_SECRET_KEY_FILE"
        # The auth app's config: private (0600, in the 0700 stack directory) since it holds the
        # admin password, which only seeds the admin user on the first start. The secret key
        # and the config path reach the server through its environment, never its arguments.
        AUTH_INI=$STACK_DIR/basic_auth.ini
        (
            umask 077
            cat >"$AUTH_INI" <<INI
[mlflow]
default_permission = READ
database_uri = $MLFLOW_AUTH_DB_URL
admin_username = $MLFLOW_ADMIN_USER
admin_password = $(cat "$MLFLOW_ADMIN_PW_FILE")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
        )
        chmod 0600 "$AUTH_INI"
        MLFLOW_ARGS=(--app-name basic-auth)
        # -u: an MLFLOW_AUTH_ADMIN_* inherited from this shell would override the file.
        MLFLOW_ENV=(-u MLFLOW_AUTH_ADMIN_USERNAME -u MLFLOW_AUTH_ADMIN_PASSWORD
                    "MLFLOW_AUTH_CONFIG_PATH=$AUTH_INI")
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$MLFLOW_SECRET_KEY_FILE")
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    # setsid: its own process group, so down.sh can stop the server and its workers together.
    # The password reaches it through PGPASSWORD (exported above), not the URI. MLflow's job
    # runner (GenAI jobs, two extra Huey processes) is off unless asked for: dagstudy uses none.
    setsid env "${MLFLOW_ENV[@]}" \
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
        "$MLFLOW" server "${MLFLOW_ARGS[@]}" \
        --backend-store-uri "$MLFLOW_DB_URL" \
        --artifacts-destination "$ARTIFACTS" \
        --host "$HOST" --port "$MLFLOW_PORT" --workers 2 \
        --allowed-hosts "$URL_HOST:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
        </dev/null >"$STACK_DIR/mlflow.log" 2>&1 &
    echo $! >"$MLFLOW_PIDFILE"
    echo "$WANT_MODE" >"$MLFLOW_MODE_FILE"
    unset MLFLOW_FLASK_SERVER_SECRET_KEY
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
case "$HOST" in 127.*|::1|localhost) RAY_CLUSTER_MODE=0 ;; *) RAY_CLUSTER_MODE=1 ;; esac
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
        # On a loopback HOST, Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
        # keeps its node IP on loopback; otherwise Ray 2.60 swaps 127.0.0.1 for the machine's
        # outward address and its GCS and raylet listen on every interface.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$RAY_CLUSTER_MODE \
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
        if [ "$MLFLOW_AUTH" = 1 ]; then
            echo "MLFLOW_TRACKING_USERNAME=$MLFLOW_ADMIN_USER"
            echo "MLFLOW_TRACKING_PASSWORD=$(cat "$MLFLOW_ADMIN_PW_FILE")"
        fi
        [ -z "$RAY_ADDRESS_VALUE" ] || echo "RAY_ADDRESS=$RAY_ADDRESS_VALUE"
        [ -z "$RAY_ADDRESS_VALUE" ] || echo "RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}"
        [ -z "$RAY_ADDRESS_VALUE" ] || echo "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$RAY_CLUSTER_MODE"
    } >"$ENV_FILE"
)
chmod 0600 "$ENV_FILE"
if [ "$MLFLOW_AUTH" = 1 ]; then
    log "stack up; environment written to $ENV_FILE (mode 0600, holds PGPASSWORD and" \
        "MLFLOW_TRACKING_PASSWORD)"
else
    log "stack up; environment written to $ENV_FILE (mode 0600, holds PGPASSWORD)"
fi
# The exports, for eval "$(infra/local/up.sh)"; the passwords are read from their files.
echo "export DAGSTUDY_HOME='$RUN_DIR'"
echo "export DAGSTUDY_OPTUNA_STORAGE='$OPTUNA_URL'"
echo "export MLFLOW_TRACKING_URI='$MLFLOW_URI'"
echo "export PGPASSWORD=\"\$(cat '$PW_FILE')\""
if [ "$MLFLOW_AUTH" = 1 ]; then
    echo "export MLFLOW_TRACKING_USERNAME='$MLFLOW_ADMIN_USER'"
    echo "export MLFLOW_TRACKING_PASSWORD=\"\$(cat '$MLFLOW_ADMIN_PW_FILE')\""
fi
[ -z "$RAY_ADDRESS_VALUE" ] || echo "export RAY_ADDRESS='$RAY_ADDRESS_VALUE'"
[ -z "$RAY_ADDRESS_VALUE" ] || echo "export RAY_AUTH_MODE='${RAY_AUTH_MODE:-disabled}'"
[ -z "$RAY_ADDRESS_VALUE" ] || echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='$RAY_CLUSTER_MODE'"
