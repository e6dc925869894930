#!/bin/sh
# Run once by the postgres image, when its data directory is first initialised: the databases
# of MLflow and of the decision log, each owned by a role of its own, as in the production
# overlay (manifests/overlays/production/postgres.yaml). The passwords come from the
# environment that docker-compose.yml passes on from .env.
set -eu
psql --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --set ON_ERROR_STOP=1 \
  --set mlflow_password="$MLFLOW_DB_PASSWORD" \
  --set decisions_password="$DECISIONS_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE decisions LOGIN PASSWORD :'decisions_password';
CREATE DATABASE decisions OWNER decisions;
SQL
