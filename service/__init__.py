"""Sleeve's front door: a web service where users sign up, ask for covers, review and download
them and browse the best ones (FastAPI pages + a JSON API, OpenAPI at ``/openapi.json``).

Plain Python, no Airflow: covers are rendered by ``batch_generate`` through Airflow's REST API in
production, or by the service's in-process worker running the same shard job (embedded default).
``python -m service`` (``make serve``) starts it.
"""
