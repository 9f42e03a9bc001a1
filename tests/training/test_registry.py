"""Registry: register, atomic promotion, rollback (function and CLI), gate rules."""

import subprocess
import sys

import pytest


def _reg(warehouse, version):
    from training import registry

    return registry.register(warehouse, version=version, kind="style", base_model="tiny", adapter_uri=f"file:///m/{version}",
                             manifest_uri="file:///s.json", metrics={"val_loss": 1.0}, training_run_id="run")


def test_promote_moves_the_alias_and_rollback_restores(warehouse):
    from training import registry

    assert registry.production_version(warehouse) is None
    for v in ("v1", "v2"):
        _reg(warehouse, v)
        registry.promote(warehouse, v)
    assert registry.production_version(warehouse)["version"] == "v2"
    assert registry.get_version(warehouse, "v1")["alias"] == "archived"
    _reg(warehouse, "v2")  # re-registering a production version keeps it production
    assert registry.production_version(warehouse)["version"] == "v2"
    assert registry.rollback(warehouse)["version"] == "v1"
    assert registry.production_version(warehouse)["adapter_uri"] == "file:///m/v1"
    assert registry.get_version(warehouse, "v2")["status"] == "rolled_back"
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback(warehouse)


def test_rollback_cli(warehouse, sleeve_env):
    from training import registry

    for v in ("v1", "v2"):
        _reg(warehouse, v)
        registry.promote(warehouse, v)
    del warehouse  # the CLI opens the DuckDB file itself
    out = subprocess.run([sys.executable, "-m", "training.registry", "rollback"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "production is now v1" in out.stdout


def test_gate_rules():
    from training.gate import GateRules, decide

    def result(champ_loss, chall_loss, blank=0, val_images=3):
        base = {"blank_images": 0, "stat_distance": 0.5}
        return {"val_split": "val", "val_images": val_images,
                "metrics": {"champion": {**base, "val_loss": champ_loss},
                            "challenger": {**base, "val_loss": chall_loss, "blank_images": blank}}}

    assert decide(result(1.0, 0.99))["decision"] == "promote"
    worse = decide(result(1.0, 1.05))
    assert worse["decision"] == "keep" and "val_loss" in worse["reasons"][0]
    assert decide(result(1.0, 1.05), GateRules(max_val_loss_increase=0.1))["decision"] == "promote"
    assert decide(result(1.0, 0.9, blank=2))["decision"] == "keep"
    assert decide(result(1.0, float("nan")))["decision"] == "keep"

    # no held-out images: the val loss would be on training data (or NaN), so never promote on it
    blind = decide(result(float("nan"), float("nan"), val_images=0))
    assert blind["decision"] == "keep" and blind["reasons"] == [
        "no held-out validation images (val_split='val', val_images=0): val_loss cannot show the challenger "
        "generalises"]
    unsplit = {k: v for k, v in result(1.0, 0.5).items() if k != "val_split"}  # an evaluation before the split
    assert decide(unsplit)["decision"] == "keep"
    lenient = decide(result(float("nan"), float("nan"), val_images=0), GateRules(require_held_out=False))
    assert lenient["decision"] == "promote" and lenient["reasons"][0].startswith("val_loss rule skipped")
    assert decide(result(1.0, 0.9, blank=1, val_images=0), GateRules(require_held_out=False))["decision"] == "keep"
