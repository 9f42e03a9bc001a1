"""The GPU benchmark's reduced CPU path (the full-size run needs a CUDA GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmarks import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_cuda_it_exits_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--allow-cpu --scale small" in proc.stderr


def test_reduced_size_runs_on_cpu_and_counts_flops():
    report = gpu.run(scale="small", size=64, steps=2, batches=(1, 2), peak_tflops=1e-3, device="cpu",
                           dtype_name="fp32")
    assert [r["batch"] for r in report["results"]] == [1, 2]
    one, two = report["results"]
    assert one["s_per_image"] > 0 and one["unet_gflops_per_step"] > 0
    # CFG doubles the UNet batch, so FLOPs per step scale with the batch.
    assert two["unet_gflops_per_step"] == pytest.approx(2 * one["unet_gflops_per_step"], rel=0.01)
    assert one["ratio_to_flop_floor"] == pytest.approx(one["batch_s"] / (one["flop_floor_s_per_image"] * 1), rel=0.05)


def test_full_size_configs_match_sdxl():
    cfg = gpu.sdxl_configs("full")
    assert cfg["unet"]["block_out_channels"] == (320, 640, 1280)
    assert cfg["unet"]["transformer_layers_per_block"] == (1, 2, 10)
    assert cfg["unet"]["cross_attention_dim"] == 2048
    assert cfg["unet"]["projection_class_embeddings_input_dim"] == 2816
