"""aapt-eval: replay held-out recordings through the generator and score it against them.

For each bag, the recorded first frame, camera poses and actions drive the streaming engine
(offline, deterministic by seed); every generated frame is compared with the recorded one.
Written under ``--output-dir``, one folder per bag plus a summary:

- ``<bag>/replay_bag/``: rosbag2 with the recorded ``/camera/image_raw`` and the generated
  ``/aapt/image_raw`` (same header stamps) and the poses;
- ``<bag>/side_by_side.mp4``: recorded | generated | absolute difference;
- ``<bag>/metrics.csv`` and ``metrics.json``: PSNR and SSIM per frame;
- ``metrics.png``: PSNR and SSIM over time, every bag and their mean;
- ``summary.json`` and ``summary.md``: mean and spread over bags at 1 s, 5 s, 30 s, 60 s
  (each the mean of the frames in the second that ends at that horizon).

``--oracle`` passes the ground truth through instead of generating, to check the pipeline:
PSNR is then infinite and SSIM 1. ``--hold-first-frame`` publishes the start image at every step:
the score of no model at all, which a generator has to beat to show it follows the camera.
``--live recorded`` runs generator_node in its own process and publishes the episode to it over
ROS 2 at the recorded rate with ``/clock`` (sim time), scoring what the node publishes;
``--live lockstep`` waits for each image before the next pose.

Example::

    aapt-eval --model models/default --mapping config/topics_sim.yaml --output-dir eval_out bags/test/*
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from aapt_ros.data.bags import TYPESTORE, BagError, BagWriter
from aapt_ros.data.episodes import Episode, read_episode, sim_mapping
from aapt_ros.data.mapping import MappingError, TopicMapping, load_mapping
from aapt_ros.eval.live import ReplayError
from aapt_ros.eval.live_rollout import rollout_live
from aapt_ros.eval.metrics import psnr, ssim
from aapt_ros.eval.pose_probe import PoseProbe, ProbeErrors, error_summary, load_probe, probe_errors
from aapt_ros.model.camera import Pose
from aapt_ros.model.checkpoint import CARD_FILE, CheckpointError, load_checkpoint
from aapt_ros.streaming.engine import DECODERS, StreamEngine, from_uint8_images, to_uint8_images
from aapt_ros.streaming.session import SessionError, StreamingSession

HORIZONS_S = (1, 5, 30, 60)
RECORDED_TOPIC = '/camera/image_raw'
GENERATED_TOPIC = '/aapt/image_raw'
POSE_TOPIC = '/camera/pose'


class EvalError(RuntimeError):
    """Evaluation cannot run; the message names the input at fault."""


@dataclass(frozen=True)
class FrameScore:
    index: int
    time_s: float  # since the first frame
    psnr: float
    ssim: float


def rollout(session: StreamingSession, episode: Episode, *, oracle: bool = False) -> list[np.ndarray]:
    """Generated frames, the first being the recorded start frame (image-to-video)."""
    poses = [Pose(tuple(p), tuple(q)) for p, q in zip(episode.positions, episode.orientations, strict=True)]  # type: ignore[arg-type]
    arm_base = None
    if session.draws_arm:
        if episode.arm_base.size == 0:
            raise EvalError(
                f'{episode.source}: the model draws the arm from its base pose, which this episode lacks; '
                'read it with a topic mapping that names arm_base_frame (bags of aapt-record-sim have it on /tf_static)'
            )
        arm_base = Pose(tuple(episode.arm_base[:3]), tuple(episode.arm_base[3:]))  # type: ignore[arg-type]
    frames = [session.start(poses[0], episode.actions[0], first_frame=episode.frames[0], arm_base=arm_base)]
    for i in range(1, len(poses)):
        generated = session.step(poses[i], episode.actions[i])
        frames.append(episode.frames[i].copy() if oracle else generated)
    return frames


@torch.no_grad()
def autoencoded(engine: StreamEngine, episode: Episode, chunk: int = 64) -> list[np.ndarray]:
    """The recorded frames after the engine's autoencoder alone (frame 0 as given): the best any
    generator of this checkpoint can score, since its frames are decoded by the same autoencoder."""
    if engine.decoder_reads_arm or engine.decoder_reads_warps:
        raise EvalError(
            "--autoencode scores the autoencoder alone, but this checkpoint's light decoder also reads what the "
            'generator draws or warps from the streamed poses; score the ceiling with --decoder full'
        )
    vae = engine.vae  # on the engine's device, in its dtype
    frames = [episode.frames[0].copy()]
    for start in range(1, len(episode.frames), chunk):
        batch = torch.from_numpy(np.ascontiguousarray(episode.frames[start : start + chunk])).to(engine.device)
        latents = vae.encode(from_uint8_images(batch, engine.dtype))
        frames += list(to_uint8_images(engine.decode_latents(latents)[:, 0]).cpu().numpy())
    return frames


def score(generated: list[np.ndarray], episode: Episode) -> list[FrameScore]:
    """Scores of frames 1..N-1 (frame 0 is the given start frame, not generated)."""
    t0 = episode.stamps_ns[0]
    return [
        FrameScore(
            i,
            (episode.stamps_ns[i] - t0) / 1e9,
            psnr(generated[i], episode.frames[i]),
            ssim(generated[i], episode.frames[i]),
        )
        for i in range(1, len(generated))
    ]


def at_horizons(scores: list[FrameScore]) -> dict[str, dict[str, float]]:
    """Mean PSNR and SSIM of the frames in the second that ends at each horizon it reaches."""
    result = {}
    for horizon in HORIZONS_S:
        window = [s for s in scores if horizon - 1 < s.time_s <= horizon]
        if window:
            result[f'{horizon}s'] = {
                'psnr': _mean([s.psnr for s in window]),
                'ssim': _mean([s.ssim for s in window]),
                'frames': len(window),
            }
    return result


def _mean(values: list[float]) -> float:
    return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))


def write_bag(path: Path, episode: Episode, generated: list[np.ndarray]) -> None:
    """Recorded and generated images under their own topics, with the same header stamps."""
    types = TYPESTORE.types
    with BagWriter(path) as writer:
        for i, stamp in enumerate(episode.stamps_ns.tolist()):
            sec, nanosec = divmod(stamp, 1_000_000_000)
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id='camera_optical_frame'
            )
            for topic, frame in ((RECORDED_TOPIC, episode.frames[i]), (GENERATED_TOPIC, generated[i])):
                h, w = frame.shape[:2]
                msg = types['sensor_msgs/msg/Image'](
                    header=header,
                    height=h,
                    width=w,
                    encoding='rgb8',
                    is_bigendian=0,
                    step=3 * w,
                    data=np.ascontiguousarray(frame).reshape(-1),
                )
                writer.write(topic, msg.__msgtype__, stamp, bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__)))
            pose = types['geometry_msgs/msg/PoseStamped'](
                header=types['std_msgs/msg/Header'](stamp=header.stamp, frame_id='world'),
                pose=types['geometry_msgs/msg/Pose'](
                    position=types['geometry_msgs/msg/Point'](*episode.positions[i]),
                    orientation=types['geometry_msgs/msg/Quaternion'](*episode.orientations[i]),
                ),
            )
            writer.write(POSE_TOPIC, pose.__msgtype__, stamp, bytes(TYPESTORE.serialize_cdr(pose, pose.__msgtype__)))


def write_video(path: Path, episode: Episode, generated: list[np.ndarray], rate_hz: float) -> None:
    """recorded | generated | |difference|, side by side."""
    h, w = episode.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), rate_hz, (3 * w, h))
    for recorded, frame in zip(episode.frames, generated, strict=True):
        difference = np.abs(recorded.astype(np.int16) - frame.astype(np.int16)).astype(np.uint8)
        writer.write(cv2.cvtColor(np.concatenate([recorded, frame, difference], axis=1), cv2.COLOR_RGB2BGR))
    writer.release()


def write_scores(folder: Path, scores: list[FrameScore]) -> None:
    with open(folder / 'metrics.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['frame', 'time_s', 'psnr_db', 'ssim'])
        writer.writerows([s.index, f'{s.time_s:.4f}', f'{s.psnr:.4f}', f'{s.ssim:.5f}'] for s in scores)
    (folder / 'metrics.json').write_text(json.dumps([asdict(s) for s in scores], indent=1) + '\n')


def plot(path: Path, runs: dict[str, list[FrameScore]]) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, scores in runs.items():
        t = [s.time_s for s in scores]
        axes[0].plot(t, [min(s.psnr, 100.0) for s in scores], lw=0.8, alpha=0.6, label=name)
        axes[1].plot(t, [s.ssim for s in scores], lw=0.8, alpha=0.6)
    axes[0].set_ylabel('PSNR (dB, capped at 100)')
    axes[1].set_ylabel('SSIM')
    axes[1].set_xlabel('time since the first frame (s)')
    longest = max((s.time_s for scores in runs.values() for s in scores), default=0.0)
    for horizon in (h for h in HORIZONS_S if h <= longest):
        for ax in axes:
            ax.axvline(horizon, color='grey', lw=0.5, ls=':')
    if len(runs) <= 10:
        axes[0].legend(fontsize=7)
    fig.suptitle('generated vs recorded frames')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(per_bag: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over bags of each horizon's PSNR and SSIM."""
    summary = {}
    for horizon in HORIZONS_S:
        key = f'{horizon}s'
        values = [h[key] for h in per_bag.values() if key in h]
        if not values:
            continue
        entry: dict[str, float] = {'bags': len(values)}
        for metric in ('psnr', 'ssim'):
            series = [v[metric] for v in values]
            finite = [x for x in series if math.isfinite(x)]
            entry[f'{metric}_mean'] = _mean(series)
            entry[f'{metric}_std'] = float(np.std(finite)) if len(finite) == len(series) else 0.0
        summary[key] = entry
    return summary


def summary_table(summary: dict[str, dict[str, float]]) -> str:
    lines = ['| horizon | bags | PSNR (dB) | SSIM |', '|---|---|---|---|']
    for key, e in summary.items():
        lines.append(
            f'| {key} | {int(e["bags"])} | {e["psnr_mean"]:.2f} ± {e["psnr_std"]:.2f} | '
            f'{e["ssim_mean"]:.4f} ± {e["ssim_std"]:.4f} |'
        )
    return '\n'.join(lines) + '\n'


def append_to_card(model: Path, bags: list[Path], report: dict[str, object], table: str) -> Path:
    """Append the held-out scores to the checkpoint's model card (``CARD_FILE``); returns its path.

    Only appends: what aapt-train wrote before stays as it was.
    """
    mode = (
        'autoencoder only'
        if report['autoencode']
        else 'first frame held, no model'
        if report.get('hold_first_frame')
        else f'{report["sampling_steps"]} sampling step(s) per frame'
    )
    if report.get('decoder'):
        mode += f', {report["decoder"]} decoder'
    if report.get('window_frames') != report.get('trained_window_frames'):
        mode += f', window of {report["window_frames"]} frames (trained: {report["trained_window_frames"]})'
    names = ', '.join(f'`{b.name}`' for b in bags)
    lines = ['', f'### Held-out evaluation (aapt-eval, {mode}, seed {report["seed"]})', '', f'bags: {names}', '']
    card = model / CARD_FILE
    with card.open('a') as file:
        file.write('\n'.join(lines) + '\n' + table)
    return card


def probe_table(errors: dict[str, dict[str, float]]) -> str:
    lines = ['', '| pose probe | translation (cm/frame) | rotation (deg/frame) | joints (rad) |', '|---|---|---|---|']
    for name, e in errors.items():
        lines.append(f'| {name} | {e["translation_m"] * 100:.2f} | {e["rotation_deg"]:.3f} | {e["joints_rad"]:.3f} |')
    return '\n'.join(lines) + '\n'


def evaluate(
    model: Path,
    bags: list[Path],
    mapping: TopicMapping | None,
    output_dir: Path,
    *,
    device: str,
    seed: int,
    max_seconds: float | None,
    oracle: bool,
    live: str | None = None,
    probe: PoseProbe | None = None,
    sampling_steps: int | None = None,
    autoencode: bool = False,
    hold_first_frame: bool = False,
    append_card: bool = False,
    decoder: str = 'auto',
    window_frames: int | None = None,
) -> dict[str, dict[str, float]]:
    """Score every bag; ``live`` ('recorded' or 'lockstep' pacing) runs a node process instead,
    ``autoencode`` scores the autoencoder's reconstructions (the ceiling of the generator),
    ``hold_first_frame`` the start image repeated (the floor: no model)."""
    checkpoint = load_checkpoint(model)
    camera = checkpoint.config.camera
    session = StreamingSession(
        checkpoint,
        device=device,
        seed=seed,
        sampling_steps=sampling_steps,
        decoder=decoder,
        window_frames=window_frames,
    )
    runs: dict[str, list[FrameScore]] = {}
    horizons: dict[str, dict[str, dict[str, float]]] = {}
    probe_generated: list[ProbeErrors] = []
    probe_recorded: list[ProbeErrors] = []
    for bag in tqdm(bags, desc='bags', unit='bag'):
        max_frames = None if max_seconds is None else int(max_seconds * camera.rate_hz) + 1
        episode = read_episode(
            bag,
            mapping or sim_mapping(bag),
            rate_hz=camera.rate_hz,
            image_size=(camera.width, camera.height),
            max_frames=max_frames,
        )
        if len(episode.stamps_ns) < 2:
            raise EvalError(
                f'bag {bag} gives {len(episode.stamps_ns)} frame(s) at {camera.rate_hz} Hz; need at least 2'
            )
        folder = output_dir / bag.name
        folder.mkdir(parents=True)
        if live:
            generated = rollout_live(
                model,
                episode,
                folder / 'node.log',
                device=device,
                seed=seed,
                pacing=live,
                decoder=decoder,
                window_frames=window_frames,
            )
        elif autoencode:
            generated = autoencoded(session.engine, episode)
        elif hold_first_frame:
            generated = [episode.frames[0].copy() for _ in episode.frames]
        else:
            generated = rollout(session, episode, oracle=oracle)
        scores = score(generated, episode)
        write_bag(folder / 'replay_bag', episode, generated)
        write_video(folder / 'side_by_side.mp4', episode, generated, camera.rate_hz)
        write_scores(folder, scores)
        if probe is not None:  # motion and joints read from the frames vs the commanded ones
            probe_generated.append(probe_errors(probe, np.stack(generated), episode))
            probe_recorded.append(probe_errors(probe, episode.frames, episode))
            (folder / 'probe.json').write_text(
                json.dumps(
                    {
                        'generated': error_summary(probe_generated[-1:]),
                        'recorded (probe floor)': error_summary(probe_recorded[-1:]),
                    },
                    indent=2,
                )
                + '\n'
            )
        runs[bag.name] = scores
        horizons[bag.name] = at_horizons(scores)
    plot(output_dir / 'metrics.png', runs)
    summary = summarize(horizons)
    report: dict[str, object] = {
        'model': str(model),
        'oracle': oracle,
        'autoencode': autoencode,
        'hold_first_frame': hold_first_frame,
        'live': live,
        'sampling_steps': session.engine.sampling_steps,
        'decoder': session.engine.decoder,
        'window_frames': session.window_size,
        'trained_window_frames': checkpoint.config.generator.window_frames,
        'seed': seed,
        'summary': summary,
        'per_bag': horizons,
    }
    table = summary_table(summary)
    if probe is not None:
        report['pose_probe'] = {
            'generated': error_summary(probe_generated),
            'recorded (probe floor)': error_summary(probe_recorded),
        }
        table += probe_table(report['pose_probe'])  # type: ignore[arg-type]
    (output_dir / 'summary.json').write_text(json.dumps(report, indent=2) + '\n')
    (output_dir / 'summary.md').write_text(table)
    if append_card:
        append_to_card(model, bags, report, table)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bags', type=Path, nargs='+', help='held-out rosbag2 folders (or files)')
    parser.add_argument('--model', type=Path, default=Path('models/default'), help='checkpoint folder')
    parser.add_argument(
        '--mapping',
        type=Path,
        default=None,
        help='topic-mapping YAML (default: the topics aapt-record-sim writes, raw or compressed images)',
    )
    parser.add_argument('--output-dir', type=Path, required=True, help='new folder for the results')
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--seed', type=int, default=0, help='seed of the generation noise')
    parser.add_argument('--max-seconds', type=float, default=None, help='score at most this long per bag')
    parser.add_argument('--oracle', action='store_true', help='pass the recorded frames through (pipeline check)')
    parser.add_argument(
        '--autoencode',
        action='store_true',
        help="score the autoencoder's reconstructions of the recorded frames (the generator's ceiling)",
    )
    parser.add_argument(
        '--hold-first-frame',
        action='store_true',
        help='publish the start image at every step: the no-model baseline a generator must beat',
    )
    parser.add_argument(
        '--steps', type=int, default=None, help="sampling steps per frame (default: the checkpoint's sampling_steps)"
    )
    parser.add_argument(
        '--decoder',
        choices=DECODERS,
        default='auto',
        help="the autoencoder's decoder (full), its light one (fast, from aapt-train decoder) or auto: "
        'the light one when the checkpoint has one, as the node does',
    )
    parser.add_argument(
        '--window-frames',
        type=int,
        default=None,
        help="recent frames each frame attends to (default: the checkpoint's generator.window_frames)",
    )
    parser.add_argument(
        '--append-card',
        action='store_true',
        help=f"append the summary table to the model folder's {CARD_FILE} (created if missing)",
    )
    parser.add_argument(
        '--probe', type=Path, default=None, help='pose-following probe (aapt-train-probe): adds motion and joint errors'
    )
    parser.add_argument(
        '--live',
        choices=['recorded', 'lockstep'],
        default=None,
        help='run generator_node in its own process and drive it over ROS 2 with /clock, at the '
        'recorded rate or frame by frame',
    )
    args = parser.parse_args(argv)
    modes = {
        '--oracle': args.oracle,
        '--autoencode': args.autoencode,
        '--hold-first-frame': args.hold_first_frame,
        '--live': args.live is not None,
    }
    chosen = [name for name, on in modes.items() if on]
    if len(chosen) > 1:
        print(f'ERROR: {" and ".join(chosen)} choose what is scored; give one of them; see --help', file=sys.stderr)
        return 1
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        print(f'ERROR: refusing to overwrite the non-empty folder {args.output_dir}; see --help', file=sys.stderr)
        return 1
    try:
        mapping = load_mapping(args.mapping) if args.mapping else None
        evaluate(
            args.model,
            args.bags,
            mapping,
            args.output_dir,
            device=args.device,
            seed=args.seed,
            max_seconds=args.max_seconds,
            oracle=args.oracle,
            live=args.live,
            sampling_steps=args.steps,
            autoencode=args.autoencode,
            hold_first_frame=args.hold_first_frame,
            append_card=args.append_card,
            decoder=args.decoder,
            window_frames=args.window_frames,
            probe=load_probe(args.probe) if args.probe else None,
        )
    except (EvalError, BagError, MappingError, CheckpointError, SessionError, ReplayError, ValueError) as err:
        print(f'ERROR: {err}', file=sys.stderr)
        return 1
    print((args.output_dir / 'summary.md').read_text(), end='')
    print(f'wrote {args.output_dir}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
