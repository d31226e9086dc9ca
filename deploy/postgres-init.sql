-- One server, three databases: MLflow's backend store, Prefect's, and the served requests with the
-- retrain cooldown (POPULARITY_STORE__URL). Runs only on an empty data volume; on an existing one:
--   docker compose -f deploy/compose.yaml exec postgres createdb -U popularity monitoring
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE monitoring;
