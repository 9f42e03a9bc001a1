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
