"""`python -m sleeve.cli COMMAND`: operator commands that need no Airflow scheduler.

    init        migrate the warehouse, create store/outbox, build the tiny model, init Airflow's DB
                and its `gpu` pool
    migrate     apply pending warehouse migrations
    tiny-model  (re)build the tiny SDXL at $SLEEVE_HOME/models/tiny-sdxl
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from sleeve.settings import SettingsError, get_settings


def cmd_migrate(_args) -> None:
    from sleeve.warehouse import open_warehouse

    applied = open_warehouse().migrate()
    print(f"warehouse migrations applied: {applied or 'none pending'}")


def cmd_tiny_model(_args) -> None:
    from sleeve.tinymodel import ensure_tiny_sdxl

    settings = get_settings()
    settings.tiny_model_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"tiny SDXL at {ensure_tiny_sdxl(settings.tiny_model_dir)}")


def cmd_init(args) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    cmd_migrate(args)
    cmd_tiny_model(args)
    # Airflow's own metadata DB (sqlite under AIRFLOW_HOME) for dag.test() and the local UI.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL)
    # Every GPU task takes a slot of pool `gpu`: without the pool the scheduler never runs them.
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "gpu", str(settings.gpu_slots),
                    "Sleeve GPU jobs: one slot per GPU (SLEEVE_GPU_SLOTS)"], check=True, stdout=subprocess.DEVNULL)
    print(f"SLEEVE_HOME ready at {settings.home}")


COMMANDS = {"init": cmd_init, "migrate": cmd_migrate, "tiny-model": cmd_tiny_model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sleeve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
