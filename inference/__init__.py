"""Labelling, prompt building and generation: plain Python, no Airflow."""
