"""`make bench`: every benchmark in turn, their headline figures against the goals, written to bench/RESULTS.md.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/run_all.py

Each script runs in its own process (so one's pools and caches do not warm another's) and prints its own tables;
this collects them, with the machine they ran on, under a summary of the figures the performance issue set goals
for. A benchmark prints figures; it asserts nothing, and a missed goal is a figure, not a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import machine  # noqa: E402

SCRIPTS = (("credits.py", []), ("api.py", []), ("scale.py", []), ("grants.py", []))
# --quick: a smoke run that checks every script works; its figures are not the ones to commit.
QUICK = {"grants.py": ["--teams", "5000", "--sample", "500"]}
QUICK_ENVIRONMENT = {"BENCH_ROUNDS": "1", "BENCH_BURST": "10"}

# figure: (goal as written, met?)
GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "in-process spend ÷ floor, 1 thread": ("≥ 0.6", lambda x: x >= 0.6),
    "in-process spend ÷ floor, 8 threads, one team": ("≥ 0.6", lambda x: x >= 0.6),
    "in-process spend ÷ floor, 8 threads, 8 teams": ("≥ 0.6", lambda x: x >= 0.6),
    "HTTP spend ÷ floor, 1 client": ("≥ 0.3", lambda x: x >= 0.3),
    "one hot team, 8 threads ÷ 1 thread": ("≥ 0.8", lambda x: x >= 0.8),
    "spend, 10,000 blocks ÷ 1 block": ("≤ 1.3", lambda x: x <= 1.3),
    "dashboard, 100,000 entries ÷ 10": ("≤ 1.3", lambda x: x <= 1.3),
    "history, 100,000 entries ÷ 10": ("≤ 1.3", lambda x: x <= 1.3),
    "CSV, 100,000 entries ÷ 10": ("≤ 1.3", lambda x: x <= 1.3),
    "monthly job ÷ per-team loop": ("≤ 0.03", lambda x: x <= 0.03),
    "round trips per spend": ("≤ 4", lambda x: x <= 4),
}


def run(script: str, arguments: list[str], environment: dict[str, str]) -> tuple[str, dict[str, float]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as figures:
        done = subprocess.run(
            [sys.executable, str(HERE / script), *arguments],
            env={**os.environ, **environment, "BENCH_JSON": figures.name},
            capture_output=True,
            text=True,
            check=False,
        )
        sys.stderr.write(done.stderr[-2000:] if done.returncode else "")
        if done.returncode:
            return f"`{script}` failed (exit {done.returncode}); see its output above.\n", {}
        text = Path(figures.name).read_text()
        return done.stdout.strip() + "\n", json.loads(text) if text else {}


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    started = datetime.now(UTC)
    sections, headline = [], {}
    for script, arguments in SCRIPTS:
        print(f"running bench/{script} …", file=sys.stderr, flush=True)
        if quick:
            output, figures = run(script, QUICK.get(script, arguments), QUICK_ENVIRONMENT)
        else:
            output, figures = run(script, arguments, {})
        print(output)
        sections.append(f"## bench/{script}\n\n{output}")
        headline.update(figures)
    lines = [
        "# Benchmark results",
        "",
        f"`make bench`, {started:%Y-%m-%d %H:%M} UTC. {machine()}.",
        "",
        "Ratios are medians of per-round ratios between variants run in short rotated bursts (see each script's",
        "docstring), so they hold on a shared, noisy machine; absolute rates below are for orientation only.",
        "",
        "| figure | measured | goal | met |",
        "|---|---:|---|---|",
    ]
    for figure, (goal, met) in GOALS.items():
        if figure in headline:
            value = headline[figure]
            lines.append(f"| {figure} | {value:.2f} | {goal} | {'yes' if met(value) else 'no'} |")
        else:
            lines.append(f"| {figure} | not measured | {goal} | no |")
    for figure, value in headline.items():
        if figure not in GOALS:
            lines.append(f"| {figure} | {value:.2f} | | |")
    print("\n".join(lines))
    if quick:
        print("\n--quick: RESULTS.md left as it was", file=sys.stderr)
        return
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n\n" + "\n".join(sections))
    print(f"\nwrote {HERE / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
