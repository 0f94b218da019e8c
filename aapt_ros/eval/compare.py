"""aapt-eval-compare: several aapt-eval results side by side, as one table and one plot.

Each argument is an ``aapt-eval --output-dir`` folder, optionally labelled ``LABEL=FOLDER``.
The table lists each run's mean PSNR and SSIM over its bags at the 1 s, 5 s, 30 s and 60 s
horizons (from its ``summary.json``); the plot draws each run's per-frame PSNR and SSIM averaged
over its bags against time, so drift shows as a falling curve. Example::

    aapt-eval-compare adapt=eval/adapt adversarial=eval/adversarial --output docs/ablation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from aapt_ros.eval.replay import HORIZONS_S


class CompareError(ValueError):
    """A folder that is not an aapt-eval result; the message names it."""


def load_run(folder: Path) -> tuple[dict[str, dict[str, float]], np.ndarray, np.ndarray, np.ndarray]:
    """A run's summary and its per-frame curves averaged over bags: (summary, time_s, psnr, ssim).

    Bags of different lengths are averaged over the frames they share (the shortest bag's length).
    """
    summary_file = folder / 'summary.json'
    if not summary_file.is_file():
        raise CompareError(f'{folder} has no summary.json: pass folders written by aapt-eval --output-dir')
    summary = json.loads(summary_file.read_text())['summary']
    curves = [json.loads(f.read_text()) for f in sorted(folder.glob('*/metrics.json'))]
    if not curves:
        raise CompareError(f'{folder} has no <bag>/metrics.json')
    frames = min(len(c) for c in curves)
    time_s = np.array([s['time_s'] for s in curves[0][:frames]])
    psnr = np.mean([[min(s['psnr'], 100.0) for s in c[:frames]] for c in curves], axis=0)
    ssim = np.mean([[s['ssim'] for s in c[:frames]] for c in curves], axis=0)
    return summary, time_s, psnr, ssim


def table(summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per run, PSNR (dB) / SSIM at each horizon that any run reaches."""
    horizons = [f'{h}s' for h in HORIZONS_S if any(f'{h}s' in s for s in summaries.values())]
    lines = ['| run | bags | ' + ' | '.join(f'{h} PSNR / SSIM' for h in horizons) + ' |']
    lines.append('|---|---|' + '---|' * len(horizons))
    for label, summary in summaries.items():
        bags = max((v['bags'] for v in summary.values()), default=0)
        cells = [
            f'{summary[h]["psnr_mean"]:.2f} / {summary[h]["ssim_mean"]:.3f}' if h in summary else '-' for h in horizons
        ]
        lines.append(f'| {label} | {int(bags)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(path: Path, runs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for label, (time_s, psnr, ssim) in runs.items():
        axes[0].plot(time_s, psnr, lw=1.0, label=label)
        axes[1].plot(time_s, ssim, lw=1.0)
    axes[0].set_ylabel('PSNR (dB), mean over bags')
    axes[1].set_ylabel('SSIM, mean over bags')
    axes[1].set_xlabel('time since the first frame (s)')
    axes[0].legend(fontsize=8)
    fig.suptitle('generated vs recorded frames on held-out episodes')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('runs', nargs='+', help='aapt-eval output folders, each FOLDER or LABEL=FOLDER')
    parser.add_argument('--output', type=Path, required=True, help='new folder for compare.md and compare.png')
    args = parser.parse_args(argv)
    if args.output.exists() and any(args.output.iterdir()):
        print(f'ERROR: refusing to overwrite the non-empty folder {args.output}', file=sys.stderr)
        return 1
    summaries: dict[str, dict[str, dict[str, float]]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    try:
        for item in args.runs:
            label, sep, folder = item.partition('=')
            path = Path(folder if sep else label)
            label = label if sep else path.name
            summaries[label], *curve = load_run(path)
            curves[label] = (curve[0], curve[1], curve[2])
    except CompareError as err:
        print(f'ERROR: {err}', file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    text = table(summaries)
    (args.output / 'compare.md').write_text(text)
    plot(args.output / 'compare.png', curves)
    print(text, end='')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
