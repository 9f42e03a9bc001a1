"""Sleeve's benchmarks, kept out of the product packages.

``make bench`` (``python -m benchmarks``) runs every CPU part side by side (:mod:`benchmarks.run`);
``make bench-gpu`` (``python -m benchmarks.gpu``) measures generation at real SDXL size on a GPU.
"""
