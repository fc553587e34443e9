#!/usr/bin/env bash
# infra/local/down.sh: stop what infra/local/up.sh started in ${DAGSTUDY_HOME:-./dagstudy-runs}.
#
# Only the processes named by up.sh's pidfiles are stopped (never `ray stop`, which would stop
# every Ray on the machine). Data stays in place; --purge removes the PostgreSQL data, the
# artifacts, the secrets (the PostgreSQL and MLflow admin passwords, the Flask secret key,
# basic_auth.ini) and stack.env as well, which also turns MLflow basic auth off for the next up.sh.
#
# Usage: down.sh [--purge]
set -euo pipefail

PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "down.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "down.sh: $(date +%T) $*" >&2; }

RUN_DIR=${DAGSTUDY_HOME:-./dagstudy-runs}
if [ ! -d "$RUN_DIR" ]; then
    log "no run directory $RUN_DIR: nothing to stop"
    exit 0
fi
RUN_DIR=$(cd "$RUN_DIR" && pwd)
STACK_DIR=$RUN_DIR/stack
PG_DATA=$RUN_DIR/postgres

# Stop the process group led by the PID in a pidfile (up.sh starts each piece with setsid):
# SIGTERM, up to 30 s to exit, then SIGKILL. A stale pidfile whose PID now belongs to another
# program (its command line lacks WHAT) is only removed.
stop_group() {
    local name=$1 pidfile=$2 what=$3 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$what"; then
        log "stopping $name (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 60); do
            kill -0 -- "-$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# Ray first (its workers may be writing to the others), then MLflow, then PostgreSQL.
stop_group "Ray head" "$STACK_DIR/ray.pid" "ray start --head"
stop_group "MLflow" "$STACK_DIR/mlflow.pid" "mlflow server"

if [ -f "$PG_DATA/postmaster.pid" ]; then
    # pg_ctl from PATH, else the Debian package's directory; as 'postgres' when we are root.
    PG_CTL=$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -n1)
    AS_PG=()
    [ "$(id -u)" != 0 ] || AS_PG=(runuser -u postgres --)
    log "stopping PostgreSQL"
    "${AS_PG[@]}" "$PG_CTL" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null \
        || log "pg_ctl stop failed (already stopped?)"
fi

if [ "$PURGE" = 1 ]; then
    log "removing the stack's data under $RUN_DIR"
    rm -rf "$PG_DATA" "$RUN_DIR/mlflow-artifacts" "$RUN_DIR/ray-tmp" "$STACK_DIR" \
        "$RUN_DIR/stack.env"
fi
log "stopped"
