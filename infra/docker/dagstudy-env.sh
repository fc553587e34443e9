#!/bin/sh
# dagstudy-env: read secrets from files, then run the command given.
#
# For each NAME below, if NAME_FILE is set, NAME is exported with that file's contents (trailing
# newlines dropped) and NAME_FILE is unset. Compose mounts secrets as files under /run/secrets,
# so passwords never appear in compose files, image layers or the command line:
#
#   PGPASSWORD                      libpq (Optuna's and MLflow's PostgreSQL connections)
#   MLFLOW_TRACKING_PASSWORD        the MLflow client's basic-auth password
#   MLFLOW_AUTH_ADMIN_PASSWORD      the MLflow server's admin password (basic-auth app)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the MLflow server's CSRF secret key (basic-auth app)
#
# (Ray reads its token file itself: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH=FILE.)
#
# Usage: dagstudy-env COMMAND [ARG...]   (the image's entrypoint is `dagstudy-env dagstudy`)
set -eu

for name in PGPASSWORD MLFLOW_TRACKING_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD \
            MLFLOW_FLASK_SERVER_SECRET_KEY; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "already=\${${name}:+set}"
    if [ -n "$already" ]; then
        echo "dagstudy-env: both ${name} and ${name}_FILE are set; set one" >&2
        exit 2
    fi
    if [ ! -r "$file" ]; then
        echo "dagstudy-env: ${name}_FILE=${file} is not a readable file" >&2
        exit 2
    fi
    value=$(cat "$file")
    if [ -z "$value" ]; then
        echo "dagstudy-env: ${name}_FILE=${file} is empty" >&2
        exit 2
    fi
    export "${name}=${value}"
    unset "${name}_FILE"
done

if [ "$#" -eq 0 ]; then
    echo "usage: dagstudy-env COMMAND [ARG...]" >&2
    exit 2
fi
exec "$@"
