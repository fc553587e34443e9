#!/bin/sh
# Writes the compose stack's secrets, one random 64-hex-digit value per file, into
# infra/docker/secrets/ (git-ignored and docker-ignored). Existing files are kept, so running
# it again never changes a password a volume was initialised with.
#
# The directory is 0700 (other users of this machine cannot reach the files); the files are
# 0644 because compose bind-mounts them as they are into containers that run as other uids
# (postgres: 999, dagstudy: 1000).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)/secrets
mkdir -p "$dir"
chmod 700 "$dir"
for name in postgres_password mlflow_admin_password mlflow_flask_secret_key ray_auth_token; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        echo "kept    $file"
        continue
    fi
    if command -v python3 >/dev/null 2>&1; then
        value=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    else
        value=$(openssl rand -hex 32)
    fi
    (umask 022 && printf '%s\n' "$value" >"$file")
    echo "created $file"
done
