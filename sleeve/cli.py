"""`python -m sleeve.cli COMMAND`: operator commands that need no Airflow scheduler.

    init        migrate the warehouse, create store/outbox, install the base model, init Airflow's DB
                and its `gpu` pool
    migrate     apply pending warehouse migrations
    base-model  verify the committed base model and install it at $SLEEVE_HOME/models/sleeve-base
    tiny-model  (re)build the random tiny SDXL (shapes only) at $SLEEVE_HOME/models/tiny-sdxl
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


def cmd_base_model(_args) -> None:
    from sleeve.basemodel import ensure_base_model

    print(f"base model at {ensure_base_model(get_settings().base_model_dir)}")


def cmd_init(args) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    cmd_migrate(args)
    cmd_base_model(args)
    # Airflow's own metadata DB (sqlite under AIRFLOW_HOME) for dag.test() and the local UI.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL)
    # Every GPU task takes a slot of pool `gpu`: without the pool the scheduler never runs them.
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "gpu", str(settings.gpu_slots),
                    "Sleeve GPU jobs: one slot per GPU (SLEEVE_GPU_SLOTS)"], check=True, stdout=subprocess.DEVNULL)
    print(f"SLEEVE_HOME ready at {settings.home}")


COMMANDS = {"init": cmd_init, "migrate": cmd_migrate, "base-model": cmd_base_model, "tiny-model": cmd_tiny_model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sleeve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    from sleeve.basemodel import BaseModelError

    try:
        COMMANDS[args.command](args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except BaseModelError as exc:
        print(f"base model error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
