"""The local CeleryExecutor cluster behind ``make test-cluster`` and the Airflow configuration it
shares with docker/docker-compose.yaml. Plain Python: no Airflow import; Airflow runs in the
processes it starts."""
