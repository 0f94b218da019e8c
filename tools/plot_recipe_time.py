#!/usr/bin/env python3
"""Plot the reports of ``tools/run_recipe.py``: each step's seconds side by side per report (left)
and the recipe's running total in minutes against a budget (right).

Usage::

    python3 tools/plot_recipe_time.py docs/benchmarks/recipe_pace_h100_2026-11-23_run*.json \\
        --output docs/benchmarks/recipe_pace_h100_2026-11-23.png --budget-min 120
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def label(report: dict[str, Any], path: Path) -> str:
    return f'{path.stem}: {report["minutes"]:.1f} min ({report["machine"]["gpu"]})'


def plot(reports: list[tuple[Path, dict[str, Any]]], output: Path, budget_min: float) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [step['name'] for step in reports[0][1]['steps']]
    fig, (bars, total) = plt.subplots(1, 2, figsize=(14, 0.32 * len(names) + 2), width_ratios=(3, 2))
    height = 0.8 / len(reports)
    for index, (path, report) in enumerate(reports):
        seconds = {step['name']: step['seconds'] for step in report['steps']}
        ys = [i + index * height for i in range(len(names))]
        bars.barh(ys, [seconds.get(name, 0.0) for name in names], height=height, label=label(report, path))
        running, minutes = 0.0, []
        for name in names:
            running += seconds.get(name, 0.0) / 60
            minutes.append(running)
        total.plot(minutes, range(len(names)), marker='o', markersize=3, label=path.stem)
    bars.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("seconds (train steps: projected at the recipe's step counts)")
    bars.legend(fontsize=8, loc='lower right')
    total.set_yticks(range(len(names)), [''] * len(names))
    total.invert_yaxis()
    total.set_xlabel('minutes, running total')
    if budget_min:
        total.axvline(budget_min, color='red', linestyle='--', label=f'budget {budget_min:g} min')
    total.legend(fontsize=8, loc='upper right')
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('reports', type=Path, nargs='+', help='JSON reports of tools/run_recipe.py (same recipe)')
    parser.add_argument('--output', type=Path, required=True, help='PNG to write')
    parser.add_argument('--budget-min', type=float, default=0.0, help='a budget line in minutes (0: none)')
    args = parser.parse_args(argv)
    plot([(path, json.loads(path.read_text())) for path in args.reports], args.output, args.budget_min)
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
