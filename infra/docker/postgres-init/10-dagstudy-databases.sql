-- Runs once, when the postgres container initialises an empty data volume
-- (/docker-entrypoint-initdb.d). POSTGRES_DB creates the Optuna database (optuna); these are
-- MLflow's tracking store and the MLflow basic-auth user store.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
