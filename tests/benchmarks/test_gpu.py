"""The GPU benchmark's code paths on CPU with a tiny model (the SDXL-size run needs a CUDA GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_cuda_it_exits_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--device cpu --tiny" in proc.stderr


def test_a_full_size_model_on_cpu_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 2 and "add --tiny" in proc.stderr


def test_tiny_run_covers_every_section_and_writes_the_report(tmp_path):
    out = tmp_path / "bench-gpu.json"
    report = gpu.run(tiny=True, device="cpu", size=64, steps=2, batches=(1, 2), compile_backend="eager",
                     train_steps=1, out=out)
    assert report["errors"] == [] and report["skipped"] == []
    assert json.loads(out.read_text()) == report
    cases = [(g["case"], g["batch"]) for g in report["generation"]]
    assert cases == [("eager", 1), ("eager", 2), ("eager, fused LoRA", 2), ("torch.compile", 1),
                     ("torch.compile", 2)]
    for g in report["generation"]:
        assert g["s_per_image"] > 0
        # The ratio is s/image over the FLOP floor: counted TFLOP per CFG step x steps / peak.
        assert g["ratio_to_flop_floor"] == pytest.approx(g["s_per_image"] / report["floor_s_per_image"], rel=0.02)
    assert report["floor_s_per_image"] == pytest.approx(
        report["unet_tflop_per_step_cfg_counted"] * 2 / report["peak_tflops"], rel=0.05)
    train = report["training"]
    assert train["s_per_step"] > 0 and train["gradient_checkpointing"] and train["ratio_to_flop_floor"] > 0
    assert report["best_s_per_image"] == min(g["s_per_image"] for g in report["generation"])
    assert set(report["speedup_vs_anchors"]) == {"diffusers_optimised_a100", "tensorrt_h100"}


def test_a_section_that_does_not_fit_the_budget_is_listed_as_skipped(monkeypatch):
    build = gpu.build_pipeline
    monkeypatch.setattr(gpu, "NEEDS_S", {k: 1e9 for k in gpu.NEEDS_S})  # every section needs more than is left
    monkeypatch.setattr(gpu, "build_pipeline", lambda scale, device, dtype: build("tiny", device, dtype))
    report = gpu.run(tiny=False, device="cpu", size=64, steps=2, batches=(1,), out=None)
    assert report["generation"] == [] and report["training"] is None
    assert [s.split(":")[0] for s in report["skipped"]] == ["generate", "lora", "train", "compile"]


def test_full_size_configs_match_sdxl():
    cfg = gpu.sdxl_configs("full")
    assert cfg["unet"]["block_out_channels"] == (320, 640, 1280)
    assert cfg["unet"]["transformer_layers_per_block"] == (1, 2, 10)
    assert cfg["unet"]["cross_attention_dim"] == 2048
    assert cfg["unet"]["projection_class_embeddings_input_dim"] == 2816
