"""The README's benchmark table, regenerated from ``$SLEEVE_HOME/bench.json`` (``make bench``).

    python -m benchmarks.table            # rewrite the table in README.md
    python -m benchmarks.table --print    # print it instead

Everything between the two marker lines in README.md is replaced: the date and machine of the
run, one row per described key (median, min-max, rounds, and its baseline in one line), and
the required keys the run did not produce.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.run import REQUIRED

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def render(report: dict) -> str:
    machine = report["machine"]
    lines = [f"Measured on {report['measured_at'][:10]} by `make bench` ({report['wall_s']:g} s; "
             f"{machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}). "
             "Ratios are over baseline and Sleeve measured side by side in the same rounds." + _reruns(report), "",
             "| key | median (min-max, rounds) | what it measures, against what baseline |", "|---|---|---|"]
    keys, descriptions = report["keys"], report["descriptions"]
    order = [k for k in REQUIRED if k in descriptions] + sorted(k for k in descriptions if k not in REQUIRED)
    for key in order:
        if key in keys:
            lines.append(f"| `{key}` | {_value(keys[key])} | {descriptions[key]} |")
    missing = report.get("missing") or []
    failed = report.get("failed") or []
    if missing or failed:
        lines.append("")
        if missing:
            lines.append("Not produced by this run: " + ", ".join(f"`{k}`" for k in missing) + ".")
        if failed:
            lines.append("Parts that failed: " + ", ".join(failed) + ".")
    return "\n".join(lines)


def _reruns(report: dict) -> str:
    """The parts measured again later (``--only``), with when."""
    later = sorted((record["measured_at"], name) for name, record in report.get("parts", {}).items()
                   if record.get("measured_at") and record["measured_at"] > report["measured_at"])
    if not later:
        return ""
    return " Re-run later with `--only`: " + ", ".join(f"{name} ({at[:16].replace('T', ' ')} UTC)"
                                                        for at, name in later) + "."


def _value(entry: dict) -> str:
    if "median" in entry:
        return f"**{entry['median']:.3g}** ({entry['min']:.3g}-{entry['max']:.3g}, {len(entry['rounds'])})"
    value = entry["value"]
    return f"**{value:.3g}** (one count)" if isinstance(value, int | float) else str(value)


def replace_table(readme: str, table: str) -> str:
    if readme.count(START) != 1 or readme.count(END) != 1:
        raise ValueError(f"README.md must hold the markers {START} and {END} once each")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv=None) -> int:
    from sleeve.settings import get_settings

    parser = argparse.ArgumentParser(description="Regenerate the README's benchmark table from bench.json")
    parser.add_argument("--bench", type=Path, default=None, help="bench.json (default $SLEEVE_HOME/bench.json)")
    parser.add_argument("--print", action="store_true", help="print the table instead of writing README.md")
    args = parser.parse_args(argv)
    path = args.bench or get_settings().home / "bench.json"
    if not path.exists():
        print(f"{path} does not exist: run `make bench` first", file=sys.stderr)
        return 2
    table = render(json.loads(path.read_text()))
    if args.print:
        print(table)
    else:
        README.write_text(replace_table(README.read_text(), table))
        print(f"README.md benchmark table updated from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
