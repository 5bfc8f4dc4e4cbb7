#!/bin/sh
# The team's MLflow tracking server: the ONE canonical command (infra/k8s runs the same flags).
#
#   backend store   PostgreSQL            MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://USER:PASS@HOST:5432/mlflow
#   artifact store  S3, proxied           MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/mlflow  (+ AWS_* / IRSA on the server only)
#   auth            mlflow basic-auth     basic_auth.ini rendered from MLFLOW_AUTH_DATABASE_URI + MLFLOW_AUTH_ADMIN_*
#
# Every setting comes from the environment (see server.env.example); nothing secret is on the command
# line (it would show in `ps`) or in a file in the image. Run: `sh mlflow/server.sh`.
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg2://mlflow:PASS@postgres:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://team-bucket/mlflow}"

# basic-auth: the user store is a second database; its URI holds a password, so the ini is written at
# start into a private file (mode 600), never committed or baked into the image.
if [ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]; then
    : "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI, e.g. postgresql+psycopg2://mlflow:PASS@postgres:5432/mlflow_auth}"
    : "${MLFLOW_AUTH_ADMIN_USERNAME:=admin}"
    : "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (used once, to create the admin in an empty user store)}"
    here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
    umask 077
    MLFLOW_AUTH_CONFIG_PATH=$(mktemp "${TMPDIR:-/tmp}/basic_auth.XXXXXX.ini")
    sed -e "s|@MLFLOW_AUTH_DATABASE_URI@|${MLFLOW_AUTH_DATABASE_URI}|" \
        -e "s|@MLFLOW_AUTH_ADMIN_USERNAME@|${MLFLOW_AUTH_ADMIN_USERNAME}|" \
        -e "s|@MLFLOW_AUTH_DEFAULT_PERMISSION@|${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}|" \
        "$here/basic_auth.ini" > "$MLFLOW_AUTH_CONFIG_PATH"
    export MLFLOW_AUTH_CONFIG_PATH MLFLOW_AUTH_ADMIN_PASSWORD
fi

exec "${MLFLOW_BIN:-mlflow}" server \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --serve-artifacts \
    --app-name basic-auth \
    --host "${MLFLOW_HOST:-0.0.0.0}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --allowed-hosts "${MLFLOW_SERVER_ALLOWED_HOSTS:-localhost,localhost:5000,127.0.0.1,127.0.0.1:5000}"
