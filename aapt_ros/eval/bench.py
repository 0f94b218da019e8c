"""aapt-bench: speed of the streaming generator, side by side with its baselines, as JSON.

Every number comes from the same run and the same network (random weights: speed does not
depend on training):

- end to end (pose + action in -> RGB uint8 on the host, autoencoder included) and generator
  only, per-step latency p50/p99 and frames/s at batch 1; end to end with the light decoder
  (``model/fast_decoder.py``) as well as the autoencoder's full one;
- 1-step (AAPT) vs 4-step and 50-step sampling of the same network, with either decoder;
- KV-cached step vs recomputing the whole attention window without a cache;
- step cost at frame ~2000 vs frame ~50 (constant by construction: the ring buffer);
- many streams: frames/s, step latency and peak memory per batch size, and how many 30 Hz
  streams one device sustains;
- achieved TFLOP/s of the step against the GPU's bf16 peak.

Example::

    aapt-bench --device cuda --output bench_h100.json
    aapt-bench --device cpu --configs default,small --output bench_cpu.json
    aapt-bench --device cuda --configs '' --models models/default --only batches --output bench_shipped.json

``--models`` times checkpoint folders as they are (their weights and every rule of their config,
such as the shipped model's pastes, which the named configs leave out), each reported under its
folder's path.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from aapt_ros.model.camera import Pose
from aapt_ros.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from aapt_ros.model.config import CameraConfig, GeneratorConfig, ModelConfig, VAEConfig
from aapt_ros.model.init_checkpoint import untrained_checkpoint
from aapt_ros.streaming import cuda_graphs
from aapt_ros.streaming.engine import StreamEngine, network_in, resolve_device, resolve_dtype
from aapt_ros.streaming.session import StreamingSession

H100_BF16_DENSE_TFLOPS = 989.0  # datasheet peak (SXM); the brief's plain probe reaches about 790
FAST = VAEConfig(fast_decoder_channels=128)  # every config carries the light decoder too, timed beside the full one
CONFIGS: dict[str, ModelConfig] = {
    'default': ModelConfig(vae=FAST),
    'qvga': ModelConfig(  # 320x240, 60 deg horizontal field of view
        name='qvga', camera=CameraConfig(width=320, height=240, fx=277.1, fy=277.1, cx=160.0, cy=120.0), vae=FAST
    ),
    'small': ModelConfig(  # the default architecture at the smallest useful size, for CPUs
        name='small',
        camera=CameraConfig(width=64, height=64, fx=55.4, fy=55.4, cx=32.0, cy=32.0),
        vae=VAEConfig(base_channels=16, max_channels=64, fast_decoder_channels=64),
        generator=GeneratorConfig(dim=128, depth=4, heads=2),
    ),
}


@dataclass
class Timing:
    steps: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    fps: float  # frames per second over all streams of the batch

    @classmethod
    def of(cls, seconds: list[float], batch: int = 1) -> Timing:
        ms = np.asarray(seconds) * 1e3
        return cls(
            len(ms),
            float(ms.mean()),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            float(batch * 1e3 / ms.mean()),
        )


class BenchError(ValueError):
    """A bench request that cannot run (an unknown measurement); the message lists the valid ones."""


@dataclass
class ConfigReport:
    config: str
    resolution: str
    generator_parameters: int
    tokens_per_frame: int
    window_frames: int
    results: dict[str, Any] = field(default_factory=dict)
    complete: bool = False  # False in what a run cut short left: the measurements it finished


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of each call, the device synchronised after each."""
    for _ in range(warmup):
        fn()
    _sync(device)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def random_motion(batch: int, action_dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    angle = rng.normal(0, 0.02)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.repeat(rotation[None], batch, 0), rng.normal(0, 0.02, (batch, 3)), rng.normal(0, 0.5, (batch, action_dim))


def started_engine(checkpoint: Checkpoint, device: torch.device, batch: int, **kwargs: Any) -> StreamEngine:
    kwargs.setdefault('decoder', 'full')  # the configs carry both decoders; the fast one is timed by name
    engine = StreamEngine(checkpoint, batch_size=batch, device=str(device), **kwargs)
    engine.start(np.ones(batch, bool), np.repeat(checkpoint.start_frame.numpy()[None], batch, 0))
    return engine


def bench_engine(checkpoint: Checkpoint, device: torch.device, batch: int, steps: int, **kwargs: Any) -> Timing:
    free_device_memory(device)  # the last measurement's engine and graph pool, before this one allocates
    engine = started_engine(checkpoint, device, batch, **kwargs)
    rng = np.random.default_rng(0)
    motion = random_motion(batch, checkpoint.config.generator.action_dim, rng)
    return Timing.of(time_calls(lambda: engine.step(*motion), steps, warmup=5, device=device), batch)


def bench_session(checkpoint: Checkpoint, device: torch.device, steps: int, **kwargs: Any) -> Timing:
    """Batch 1 through StreamingSession: pose validation and relative motion included."""
    session = StreamingSession(checkpoint, device=str(device), decoder='full', **kwargs)
    session.start(Pose.identity())
    action = np.zeros(len(session.action_names))
    index = iter(range(10**9))

    def step() -> None:
        i = next(index)
        session.step(Pose((0.01 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)), action)

    return Timing.of(time_calls(step, steps, warmup=5, device=device))


def bench_rollout_length(checkpoint: Checkpoint, device: torch.device, frames: int, **kwargs: Any) -> dict[str, Any]:
    """Step time around frame 50 and around frame ``frames``: constant if the cache is bounded."""
    engine = started_engine(checkpoint, device, 1, **kwargs)
    motion = random_motion(1, checkpoint.config.generator.action_dim, np.random.default_rng(1))
    seconds = time_calls(lambda: engine.step(*motion), frames, warmup=0, device=device)
    early, late = Timing.of(seconds[40:60]), Timing.of(seconds[-20:])
    return {
        'early_frames': '40-60',
        'late_frames': f'{frames - 20}-{frames}',
        'early': asdict(early),
        'late': asdict(late),
        'late_over_early_p50': late.p50_ms / early.p50_ms,
    }


def bench_recompute(checkpoint: Checkpoint, device: torch.device, steps: int, compile: bool) -> Timing:
    """Baseline without KV cache: every frame re-runs the full window (sink + window) forward,
    on the same fast path as the engine (CUDA graph, torch.compile if asked)."""
    config = checkpoint.config
    dtype = resolve_dtype('auto', device)
    generator = network_in(checkpoint.generator, device, dtype)
    vae = network_in(checkpoint.vae, device, dtype)
    frames = config.generator.window_frames + 1
    c, h, w = config.vae.latent_channels, config.latent_height, config.latent_width
    make = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    inputs = (
        make(1, frames, c, h, w),
        make(1, frames, c, h, w),
        make(1, frames, 6, h, w),
        make(1, frames, config.generator.action_dim),
        torch.ones(1, frames, device=device, dtype=dtype),
    )

    image = torch.zeros(1, 1, 3, config.camera.height, config.camera.width, device=device, dtype=dtype)

    @torch.no_grad()
    def step() -> None:  # writes its result, or torch.compile would drop the work as dead code
        velocity = generator.forward_train(*inputs)[:, -1:]
        image.copy_(vae.decode(inputs[0][:, -1:] - velocity))

    run = torch.compile(step, dynamic=False) if compile else step
    if device.type == 'cuda':
        run = cuda_graphs.capture(run).replay
    return Timing.of(time_calls(run, steps, warmup=3, device=device))


def step_split(one_step_ms: float, four_steps_ms: float) -> dict[str, float]:
    """A step of k passes costs k G + F: the pass G and the work paid once per frame F (decode,
    rays, noise, copies, launch), from the 1- and 4-step times; 1 step is 3.5x faster only if F <= 0.2 G."""
    pass_ms = (four_steps_ms - one_step_ms) / 3
    per_frame_ms = one_step_ms - pass_ms
    return {'pass_ms': pass_ms, 'per_frame_ms': per_frame_ms, 'per_frame_ms_for_3_5x': 0.2 * pass_ms}


def free_device_memory(device: torch.device) -> None:
    """Return the memory of the engines (and their CUDA graphs' pools) a measurement left behind,
    before the next batch size allocates its own."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def step_flops(checkpoint: Checkpoint, device: torch.device, batch: int) -> int:
    free_device_memory(device)
    engine = StreamEngine(checkpoint, batch_size=batch, device=str(device), cuda_graph=False, decoder='full')
    with FlopCounterMode(display=False) as counter:
        engine._step_tensors()
    return int(counter.get_total_flops())


def bench_config(
    name: str,
    device: torch.device,
    batches: list[int],
    quick: bool,
    compile: bool,
    only: set[str] | None = None,
    saved: Callable[[ConfigReport], None] = lambda report: None,
    window_frames: int | None = None,
    model: Checkpoint | None = None,
) -> ConfigReport:
    """Every measurement of one config, or those named in ``only`` ('batches' is the batch sweep);
    a ratio between measurements is None when one of them was not run. ``saved`` receives the
    report after every measurement, so a run cut short keeps what it measured. ``window_frames``
    replaces the config's attention window (the node's ``window_frames`` parameter). ``model``: a
    checkpoint timed as it is, under ``name``, instead of the config ``name`` with random weights."""
    if model is not None:
        if window_frames is not None:
            raise BenchError('--window-frames applies to the named configs, not to --models')
        checkpoint, config = model, model.config
    else:
        config = CONFIGS[name]
        if window_frames is not None:
            config = config.with_generator(window_frames=window_frames)
        checkpoint = untrained_checkpoint(config)
    report = ConfigReport(
        name,
        f'{config.camera.width}x{config.camera.height}',
        sum(p.numel() for p in checkpoint.generator.parameters()),
        config.tokens_per_frame,
        config.generator.window_frames,
    )
    r = report.results
    gpu = device.type == 'cuda'
    n = (200 if quick else 1000) if gpu else (20 if quick else 60)
    jobs: list[tuple[str, Callable[[], Any]]] = [
        ('end_to_end_batch1', lambda: asdict(bench_session(checkpoint, device, n, compile=compile))),
        ('end_to_end_engine_batch1', lambda: asdict(bench_engine(checkpoint, device, 1, n, compile=compile))),
        (
            'generator_only_batch1',
            lambda: asdict(bench_engine(checkpoint, device, 1, n, decode=False, compile=compile)),
        ),
        (
            'steps_4_batch1',
            lambda: asdict(bench_engine(checkpoint, device, 1, max(n // 4, 10), sampling_steps=4, compile=compile)),
        ),
        (
            'steps_4_generator_only_batch1',
            lambda: asdict(
                bench_engine(checkpoint, device, 1, max(n // 4, 10), sampling_steps=4, decode=False, compile=compile)
            ),
        ),
        (
            'end_to_end_fast_decoder_batch1',
            lambda: asdict(bench_engine(checkpoint, device, 1, n, decoder='fast', compile=compile)),
        ),
        (
            'steps_4_fast_decoder_batch1',
            lambda: asdict(
                bench_engine(checkpoint, device, 1, max(n // 4, 10), sampling_steps=4, decoder='fast', compile=compile)
            ),
        ),
        (
            'steps_50_batch1',
            lambda: asdict(bench_engine(checkpoint, device, 1, max(n // 50, 5), sampling_steps=50, compile=compile)),
        ),
        (
            'recompute_without_cache_batch1',
            lambda: asdict(bench_recompute(checkpoint, device, max(n // 10, 5), compile)),
        ),
        (
            'rollout_length',
            lambda: bench_rollout_length(checkpoint, device, 2000 if gpu and not quick else 300, compile=compile),
        ),
    ]
    if gpu:
        jobs.insert(
            1,
            (
                'end_to_end_batch1_no_cuda_graph',
                lambda: asdict(bench_session(checkpoint, device, n // 2, cuda_graph=False, compile=compile)),
            ),
        )
    if only is not None:
        unknown = only - {key for key, _ in jobs} - {'batches'}
        if unknown:
            valid = ', '.join([key for key, _ in jobs] + ['batches'])
            raise BenchError(f'unknown measurement(s) {sorted(unknown)} on {device.type}; valid: {valid}')
        jobs = [(key, job) for key, job in jobs if key in only]
    for key, job in tqdm(jobs, desc=name, unit='bench'):
        r[key] = job()
        saved(report)

    def speedup(slower: str, faster: str) -> float | None:
        return r[slower]['p50_ms'] / r[faster]['p50_ms'] if slower in r and faster in r else None

    # Both through the engine, so the session's pose checks are not counted on one side only.
    r['one_step_speedup_over_4_steps'] = speedup('steps_4_batch1', 'end_to_end_engine_batch1')
    r['one_step_speedup_over_4_steps_generator_only'] = speedup(
        'steps_4_generator_only_batch1', 'generator_only_batch1'
    )
    r['one_step_speedup_over_4_steps_fast_decoder'] = speedup(
        'steps_4_fast_decoder_batch1', 'end_to_end_fast_decoder_batch1'
    )
    r['cache_speedup_over_recompute'] = speedup('recompute_without_cache_batch1', 'end_to_end_batch1')
    r['step_split_batch1'] = {
        name: step_split(r[one]['p50_ms'], r[four]['p50_ms'])
        for name, one, four in (
            ('full_decoder', 'end_to_end_engine_batch1', 'steps_4_batch1'),
            ('fast_decoder', 'end_to_end_fast_decoder_batch1', 'steps_4_fast_decoder_batch1'),
            ('generator_only', 'generator_only_batch1', 'steps_4_generator_only_batch1'),
        )
        if one in r and four in r
    }
    r['batches'] = {}
    for batch in tqdm(batches if only is None or 'batches' in only else [], desc=f'{name} batches', unit='batch'):
        try:
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            timing = bench_engine(checkpoint, device, batch, max(n // 5, 10), compile=compile)
            entry: dict[str, Any] = asdict(timing)
            entry['streams_at_30hz'] = batch if timing.p99_ms <= 1e3 / 30 else 0
            # Work paid once per frame (decode, copies, launch) weighs less as the batch grows.
            four = bench_engine(checkpoint, device, batch, max(n // 20, 10), sampling_steps=4, compile=compile)
            entry['steps_4_p50_ms'] = four.p50_ms
            entry['one_step_speedup_over_4_steps'] = four.p50_ms / timing.p50_ms
            fast = bench_engine(checkpoint, device, batch, max(n // 5, 10), decoder='fast', compile=compile)
            fast_four = bench_engine(
                checkpoint, device, batch, max(n // 20, 10), sampling_steps=4, decoder='fast', compile=compile
            )
            entry['fast_decoder'] = asdict(fast)
            entry['fast_decoder_steps_4_p50_ms'] = fast_four.p50_ms
            entry['fast_decoder_one_step_speedup_over_4_steps'] = fast_four.p50_ms / fast.p50_ms
            if gpu:
                entry['peak_memory_mib'] = torch.cuda.max_memory_allocated() / 2**20
                flops = step_flops(checkpoint, device, batch)
                entry['step_gflop'] = flops / 1e9
                entry['achieved_tflops'] = flops / (timing.p50_ms * 1e-3) / 1e12
                entry['fraction_of_bf16_peak'] = entry['achieved_tflops'] / H100_BF16_DENSE_TFLOPS
        except torch.OutOfMemoryError:
            # Larger batches need more: the sweep ends here, and says so, instead of losing what it measured.
            r['batches'][str(batch)] = {'out_of_memory': True}
            saved(report)
            break
        r['batches'][str(batch)] = entry
        saved(report)
    r['max_streams_at_30hz'] = max((e.get('streams_at_30hz', 0) for e in r['batches'].values()), default=None)
    report.complete = True
    saved(report)
    return report


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cpu': platform.processor() or platform.machine(),
        'threads': torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--configs', default='default,qvga', help=f'comma-separated, from {sorted(CONFIGS)}')
    parser.add_argument(
        '--models',
        default='',
        help='comma-separated checkpoint folders, timed after the configs as they are (weights and every rule)',
    )
    parser.add_argument(
        '--batches', default='1,8,64,256,1024,2048', help='batch sizes (streams) for the throughput sweep'
    )
    parser.add_argument('--quick', action='store_true', help='fewer steps per measurement (for smoke tests)')
    parser.add_argument('--compile', action='store_true', help='torch.compile the step (then captured in a CUDA graph)')
    parser.add_argument(
        '--only',
        default='',
        help='comma-separated measurements to run (keys of "results", plus "batches" for the batch sweep); '
        'default: all. With --compile every measurement compiles its own step, so a whole run can outlast a '
        'time-limited GPU session: split it',
    )
    parser.add_argument(
        '--window-frames',
        type=int,
        help="attention window in frames for every config (the node's window_frames parameter); "
        "default: the config's own",
    )
    parser.add_argument('--output', type=Path, required=True, help='JSON file to write (must not exist)')
    args = parser.parse_args(argv)
    if args.window_frames is not None and args.window_frames < 2:  # generator.window_frames' bound
        parser.error('--window-frames must be at least 2')
    names = [name for name in args.configs.split(',') if name]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        print(f'ERROR: unknown config(s) {unknown}; valid: {sorted(CONFIGS)}; see --help', file=sys.stderr)
        return 1
    if args.output.exists():
        print(f'ERROR: refusing to overwrite {args.output}; see --help', file=sys.stderr)
        return 1
    try:
        models = {path: load_checkpoint(path) for path in args.models.split(',') if path}
    except CheckpointError as error:
        print(f'ERROR: {error}; see --help', file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    if args.compile:  # each engine compiles its own step; the default limit of 8 would fall back to eager
        torch._dynamo.config.cache_size_limit = 512
    batches = [int(b) for b in args.batches.split(',')]
    result: dict[str, Any] = {
        'device': str(device),
        'machine': machine(),
        'quick': args.quick,
        'compile': args.compile,
        'only': args.only or None,
        'configs': [],
    }
    only = set(args.only.split(',')) if args.only else None
    finished: list[dict[str, Any]] = []

    def save(partial: ConfigReport) -> None:  # after every measurement: a run cut short keeps what it measured
        result['configs'] = [*finished, asdict(partial)]
        args.output.write_text(json.dumps(result, indent=2) + '\n')

    runs: list[tuple[str, Checkpoint | None]] = [*((name, None) for name in names), *models.items()]
    for name, model in runs:
        try:
            report = asdict(
                bench_config(name, device, batches, args.quick, args.compile, only, save, args.window_frames, model)
            )
        except BenchError as error:
            print(f'ERROR: {error}; see --help', file=sys.stderr)
            return 1
        finished.append(report)
        print(f'{report["config"]} {report["resolution"]}:', flush=True)
        for key, value in report['results'].items():
            if isinstance(value, dict) and 'fps' in value:
                timing = f'p50 {value["p50_ms"]:.3f} ms, p99 {value["p99_ms"]:.3f} ms'
                print(f'  {key}: {value["fps"]:.0f} frames/s, {timing}')
            elif isinstance(value, float):
                print(f'  {key}: {value:.3f}')
            elif isinstance(value, int):
                print(f'  {key}: {value}')
            elif key == 'rollout_length':
                print(f'  late/early step: {value["late_over_early_p50"]:.3f}')
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
