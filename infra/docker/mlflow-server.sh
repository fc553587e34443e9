#!/bin/sh
# dagstudy-mlflow-server: the MLflow tracking server of the compose stack and of infra/k8s.
#
# - backend store and auth store in PostgreSQL; the password comes from PGPASSWORD (libpq reads
#   it), so it is in neither the command line nor a URI. The URIs name the driver
#   (postgresql+psycopg2://): SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which
#   the image does not install (dagstudy[postgres] brings psycopg2-binary);
# - the basic-auth app (--app-name basic-auth). Its config file is written here, private to the
#   container, with the admin password from MLFLOW_AUTH_ADMIN_PASSWORD: no default password is
#   ever used (older MLflow releases shipped a well-known one in their basic_auth.ini);
# - artifacts proxied by the server (--artifacts-destination), stored under a volume;
# - binds 0.0.0.0 inside the container (publish it on 127.0.0.1 only), and --allowed-hosts
#   limits the Host headers it answers (DNS-rebinding protection).
#
# Env (required): PGHOST PGUSER PGPASSWORD MLFLOW_AUTH_ADMIN_PASSWORD
#                 MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ALLOWED_HOSTS
# Env (optional): PGPORT=5432 MLFLOW_DB=mlflow MLFLOW_AUTH_DB=mlflow_auth
#                 MLFLOW_AUTH_ADMIN_USERNAME=admin MLFLOW_AUTH_DEFAULT_PERMISSION=READ
#                 MLFLOW_ARTIFACTS_DESTINATION=/data/mlflow-artifacts MLFLOW_PORT=5000
#                 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (MLflow's GenAI job runner: two
#                 extra Huey processes that dagstudy never uses)
# Extra arguments are passed on to `mlflow server` (e.g. --workers 8).
set -eu

: "${PGHOST:?set PGHOST (the PostgreSQL host)}"
: "${PGUSER:?set PGUSER (the PostgreSQL user)}"
: "${PGPASSWORD:?set PGPASSWORD or PGPASSWORD_FILE}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD or MLFLOW_AUTH_ADMIN_PASSWORD_FILE}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY or its _FILE}"
: "${MLFLOW_ALLOWED_HOSTS:?set MLFLOW_ALLOWED_HOSTS (comma list of Host headers to answer)}"
PGPORT=${PGPORT:-5432}
export PGHOST PGUSER PGPORT PGPASSWORD

# Generated passwords only: 16 characters at least (MLflow itself needs 12). This also refuses
# the short well-known default of old MLflow releases.
if [ "${#MLFLOW_AUTH_ADMIN_PASSWORD}" -lt 16 ]; then
    echo "dagstudy-mlflow-server: MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 16 characters;" \
         "generate one, e.g. python3 -c 'import secrets; print(secrets.token_hex(32))'" >&2
    exit 2
fi
# configparser would read % as interpolation and a newline would end the value.
case "$MLFLOW_AUTH_ADMIN_PASSWORD" in
    *%*|*"
"*) echo "dagstudy-mlflow-server: MLFLOW_AUTH_ADMIN_PASSWORD must not contain % or newlines" >&2
       exit 2 ;;
esac

backend_uri="postgresql+psycopg2://${PGUSER}@${PGHOST}:${PGPORT}/${MLFLOW_DB:-mlflow}"
auth_uri="postgresql+psycopg2://${PGUSER}@${PGHOST}:${PGPORT}/${MLFLOW_AUTH_DB:-mlflow_auth}"

umask 077
auth_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
cat >"$auth_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${auth_uri}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
admin_password = ${MLFLOW_AUTH_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$auth_dir/basic_auth.ini"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

exec mlflow server \
    --app-name basic-auth \
    --backend-store-uri "$backend_uri" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/data/mlflow-artifacts}" \
    --host 0.0.0.0 \
    --port "${MLFLOW_PORT:-5000}" \
    --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
    "$@"
