"""Sleeve's Airflow glue: hooks over the plain-Python layers, the GPU-job launcher, callbacks."""
