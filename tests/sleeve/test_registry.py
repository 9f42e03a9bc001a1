"""Registry: register, atomic promotion, rollback (function and CLI)."""

import subprocess
import sys

import pytest


def _reg(warehouse, version):
    from sleeve import registry

    return registry.register(warehouse, version=version, kind="style", base_model="tiny", adapter_uri=f"file:///m/{version}",
                             manifest_uri="file:///s.json", metrics={"val_loss": 1.0}, training_run_id="run")


def test_promote_moves_the_alias_and_rollback_restores(warehouse):
    from sleeve import registry

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
    from sleeve import registry

    for v in ("v1", "v2"):
        _reg(warehouse, v)
        registry.promote(warehouse, v)
    del warehouse  # the CLI opens the DuckDB file itself
    out = subprocess.run([sys.executable, "-m", "sleeve.registry", "rollback"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "production is now v1" in out.stdout


def test_show_lists_every_kind_with_headers_dates_and_gate_numbers(warehouse, sleeve_env):
    from datetime import UTC, datetime

    from sleeve import registry

    created, promoted = datetime(2026, 3, 2, 3, 5, tzinfo=UTC), datetime(2026, 3, 2, 3, 40, tzinfo=UTC)
    registry.register(warehouse, version="style-a", kind="style", base_model="tiny", adapter_uri="file:///m/a",
                      manifest_uri="file:///s.json", training_run_id="r", now=created,
                      metrics={"challenger": {"val_loss": 0.98}, "champion": {"val_loss": 1.0}})
    registry.promote(warehouse, "style-a", now=promoted)
    registry.register(warehouse, version="dreambooth-x", kind="dreambooth", base_model="tiny",
                      adapter_uri="file:///m/x", manifest_uri="file:///s.json", training_run_id="p",
                      metrics={"final_loss": 2.5}, alias=None, now=created)
    del warehouse  # the CLI opens the DuckDB file itself
    out = subprocess.run([sys.executable, "-m", "sleeve.registry", "show"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["VERSION", "KIND", "ALIAS", "STATUS", "CREATED", "(UTC)", "PROMOTED", "(UTC)", "GATE",
                              "ADAPTER"]
    assert rows[0].split() == ["dreambooth-x", "dreambooth", "-", "registered", "2026-03-02", "03:05", "-",
                               "final", "loss", "2.5", "file:///m/x"]
    assert rows[1].split() == ["style-a", "style", "production", "promoted", "2026-03-02", "03:05", "2026-03-02",
                               "03:40", "val", "loss", "0.98", "vs", "1", "(-2.0", "%)", "file:///m/a"]
    only = subprocess.run([sys.executable, "-m", "sleeve.registry", "show", "--kind", "style"], capture_output=True,
                          text=True)
    assert [line.split()[0] for line in only.stdout.splitlines()] == ["VERSION", "style-a"]
