from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from aapt_ros.model.bilateral import bilateral
from aapt_ros.model.checkpoint import Checkpoint, load_checkpoint
from aapt_ros.model.chroma import subsample_chroma
from aapt_ros.model.generator import TILE_FOLD_STREAMS
from aapt_ros.model.vae import VideoAutoencoder
from aapt_ros.streaming.engine import (
    EngineError,
    StreamEngine,
    from_uint8_images,
    resolve_device,
    resolve_dtype,
    to_uint8_images,
)

IDENTITY = np.eye(3)


def _motion(batch: int, dx: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(IDENTITY[None], batch, 0), np.tile([dx, 0.0, 0.0], (batch, 1))


def test_batched_streams_step_independently_of_their_neighbours(tiny_model: Path) -> None:
    start = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    engine = StreamEngine(load_checkpoint(tiny_model), batch_size=3)
    engine.start(np.array([True, True, False]), start)
    frames = engine.step(*_motion(3), commit=np.array([True, True, False]))
    assert frames.shape == (3, 32, 48, 3) and frames.dtype == np.uint8
    assert engine.cache.frames_seen.tolist() == [2, 2, 0]
    engine.start(np.array([False, False, True]), start)  # stream 2 starts later, the others go on
    engine.step(*_motion(3))
    assert engine.cache.frames_seen.tolist() == [3, 3, 2]


def test_a_stream_is_not_affected_by_what_its_neighbour_sees(tiny_model: Path) -> None:
    checkpoint = load_checkpoint(tiny_model)
    start = np.random.default_rng(1).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    rng = np.random.default_rng(2)
    runs = []
    for neighbour_differs in (False, True):
        engine = StreamEngine(checkpoint, batch_size=2, seed=3)  # same seed: same noise in both runs
        frames = start.copy()
        frames[1] = 255 - frames[1] if neighbour_differs else frames[1]
        engine.start(np.ones(2, bool), frames)
        steps = []
        for i in range(8):
            rotations, translations = _motion(2, 0.01 * i)
            actions = np.zeros((2, 7))
            if neighbour_differs:
                translations[1] = rng.normal(size=3)
                actions[1] = rng.normal(size=7)
            steps.append(engine.step(rotations, translations, actions)[0])
        runs.append(steps)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_latent_only_engine_returns_latents(tiny_model: Path) -> None:
    engine = StreamEngine(load_checkpoint(tiny_model), batch_size=2, decode=False)
    engine.start(np.ones(2, bool), np.zeros((2, 32, 48, 3), np.uint8))
    first = engine.step(*_motion(2))
    assert first.shape == (2, 4, 4, 6)
    kept = first.copy()
    engine.step(*_motion(2))
    np.testing.assert_array_equal(first, kept)  # a returned array is the caller's, not the reused buffer


def test_inputs_of_the_wrong_shape_are_rejected_with_the_expected_shape(tiny_model: Path) -> None:
    engine = StreamEngine(load_checkpoint(tiny_model), batch_size=2)
    with pytest.raises(EngineError, match=r'translations must have shape \(2, 3\), got \(3,\)'):
        engine.step(np.repeat(IDENTITY[None], 2, 0), np.zeros(3))
    with pytest.raises(EngineError, match=r'actions must have shape \(2, 7\)'):
        engine.step(*_motion(2), actions=np.zeros((2, 6)))


@pytest.mark.parametrize(('device', 'message'), [('tpu', 'unknown device'), ('cuda', 'CUDA is not available')])
def test_unusable_device_is_an_error(device: str, message: str) -> None:
    if device == 'cuda' and torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(EngineError, match=message):
        resolve_device(device)


def test_dtype_auto_is_float32_on_cpu_and_unknown_dtype_is_an_error() -> None:
    assert resolve_dtype('auto', torch.device('cpu')) == torch.float32
    with pytest.raises(EngineError, match='unknown dtype'):
        resolve_dtype('float8', torch.device('cpu'))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float16'])
def test_cuda_graph_replay_matches_eager_steps(tiny_model: Path, dtype: str) -> None:
    checkpoint = load_checkpoint(tiny_model)
    start = np.random.default_rng(2).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    outputs = []
    for graph in (False, True):
        engine = StreamEngine(checkpoint, batch_size=2, device='cuda', dtype=dtype, cuda_graph=graph, seed=5)
        engine.start(np.ones(2, bool), start)
        outputs.append([engine.step(*_motion(2, 0.01 * i)) for i in range(40)])  # past the window: eviction
    for eager, replayed in zip(*outputs, strict=True):
        assert np.abs(eager.astype(int) - replayed).max() <= 1


def test_engine_refuses_a_temporal_factor_above_one(tiny_model: Path) -> None:
    checkpoint = load_checkpoint(tiny_model)
    config = checkpoint.config
    checkpoint.config = dataclasses.replace(config, vae=dataclasses.replace(config.vae, temporal_factor=4))
    with pytest.raises(EngineError, match=r'needs vae\.temporal_factor 1, got 4'):
        StreamEngine(checkpoint)


def _with_fast_decoder(tiny_model: Path) -> Checkpoint:
    checkpoint = load_checkpoint(tiny_model)
    config = dataclasses.replace(
        checkpoint.config, vae=dataclasses.replace(checkpoint.config.vae, fast_decoder_channels=16)
    )
    vae = VideoAutoencoder(config.vae)
    vae.load_state_dict(checkpoint.vae.state_dict(), strict=False)  # the fast decoder stays random
    return dataclasses.replace(checkpoint, config=config, vae=vae.eval())


def test_fast_decoder_publishes_the_decode_of_the_same_latents(tiny_model: Path) -> None:
    checkpoint = _with_fast_decoder(tiny_model)
    start = np.random.default_rng(4).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    outputs = {}
    for decoder, decode in (('full', True), ('fast', True), ('full', False)):
        engine = StreamEngine(checkpoint, batch_size=2, seed=7, decoder=decoder, decode=decode)
        engine.start(np.ones(2, bool), start)
        outputs[decoder, decode] = [engine.step(*_motion(2, 0.01 * i)) for i in range(3)]
    for latents, fast, full in zip(outputs['full', False], outputs['fast', True], outputs['full', True], strict=True):
        images = checkpoint.vae.decode_fast(torch.from_numpy(latents)[:, None])[:, 0]  # (B, C, h, w) latents
        np.testing.assert_array_equal(fast, to_uint8_images(images).numpy())
        assert not np.array_equal(fast, full)  # the option really switches the decoder


def test_auto_decoder_is_the_fast_one_when_the_checkpoint_has_one(tiny_model: Path) -> None:
    assert StreamEngine(_with_fast_decoder(tiny_model)).decoder == 'fast'
    assert StreamEngine(load_checkpoint(tiny_model)).decoder == 'full'


def test_decoder_choice_is_checked(tiny_model: Path) -> None:
    with pytest.raises(EngineError, match='unknown decoder'):
        StreamEngine(load_checkpoint(tiny_model), decoder='tiny')
    with pytest.raises(EngineError, match='has no fast decoder'):
        StreamEngine(load_checkpoint(tiny_model), decoder='fast')


def test_the_compiled_step_equals_the_eager_one(tiny_model: Path) -> None:
    """torch.compile traces the cache write (a custom operator) through its fake and runs it in
    place; the frames and the cache must come out as in eager mode, past the window's first wrap."""
    checkpoint = load_checkpoint(tiny_model)
    start = np.random.default_rng(4).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    runs = []
    for compile in (False, True):
        engine = StreamEngine(checkpoint, batch_size=2, seed=5, compile=compile)
        engine.start(np.ones(2, bool), start)
        frames = [engine.step(*_motion(2), commit=np.array([True, i != 3])) for i in range(7)]
        runs.append((np.stack(frames), engine.cache.k.clone(), engine.cache.frames_seen.tolist()))
    (eager, eager_k, eager_seen), (compiled, compiled_k, compiled_seen) = runs
    assert compiled_seen == eager_seen == [8, 7]
    torch.testing.assert_close(compiled_k, eager_k, atol=1e-4, rtol=1e-4)
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1


def test_each_camera_in_its_sink_frame_advances_on_committed_steps_and_restarts_with_its_stream(tmp_path: Path) -> None:
    from tests.conftest import save_tiny_model

    engine = StreamEngine(load_checkpoint(save_tiny_model(tmp_path / 'tiny', sink_ray_origin_scale=0.5)), batch_size=2)
    start = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    engine.start(np.ones(2, bool), start)

    def sink_x_after(commit: np.ndarray | None = None) -> list[float]:
        engine.step(*_motion(2, 0.1), commit=commit)
        return engine.sink_translations[:, 0].tolist()  # what this step's rays were made from

    assert sink_x_after(np.array([True, False])) == pytest.approx([0.1, 0.1])
    assert sink_x_after() == pytest.approx([0.2, 0.1])  # stream 1's uncommitted step is forgotten
    engine.start(np.array([False, True]), start)
    assert sink_x_after() == pytest.approx([0.3, 0.1])


def test_every_input_runs_in_half_precision_and_the_arm_base_is_kept_per_stream(tmp_path: Path) -> None:
    """The network runs in bfloat16, its geometry buffers (ray directions, plane-sweep depths, the
    arm's chain) stay float32: rounded, they cost the default model 2.7 dB on the GPU."""
    from tests.conftest import save_tiny_model

    inputs = {'sink_ray_origin_scale': 0.5, 'sink_warp_depths': (0.5, 2.0), 'previous_warp_depths': (1.0,)}
    checkpoint = load_checkpoint(save_tiny_model(tmp_path / 'tiny', **inputs, arm_chain='kuka_iiwa'))
    geometry = {name: buffer.clone() for name, buffer in checkpoint.generator.named_buffers()}
    engine = StreamEngine(checkpoint, batch_size=2, dtype='bfloat16')
    assert all(p.dtype == torch.bfloat16 for p in engine.generator.parameters())
    assert all(p.dtype == torch.bfloat16 for p in engine.vae.parameters())
    for name, buffer in engine.generator.named_buffers():
        assert buffer.dtype == geometry[name].dtype and torch.equal(buffer, geometry[name]), name
    assert any(b.dtype == torch.float32 for b in geometry.values())
    start = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    base = np.concatenate([np.eye(3), [[0.0], [0.3], [1.5]]], axis=1)  # 1.5 m ahead of the first camera
    engine.start(np.ones(2, bool), start, np.zeros((2, 7)), np.stack([base, base]))
    frames = engine.step(*_motion(2))
    assert frames.shape == (2, 32, 48, 3)
    engine.start(np.array([False, True]), start)  # stream 1 restarts without a base; stream 0 keeps its own
    np.testing.assert_allclose(engine.arm_bases[:, :, 3].cpu().numpy(), [[0.0, 0.3, 1.5], [0.0, 0.0, 0.0]], atol=1e-6)
    with pytest.raises(EngineError, match='arm_bases must be finite'):
        engine.start(np.ones(2, bool), start, None, np.full((2, 3, 4), np.nan))


def test_a_light_decoder_that_reads_the_arm_gets_the_drawing_of_the_streamed_pose() -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config(sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    vae = dataclasses.replace(config.vae, fast_decoder_channels=16, fast_decoder_arm_channels=9)
    checkpoint = untrained_checkpoint(dataclasses.replace(config, vae=vae), seed=0)
    assert checkpoint.vae.fast_decoder is not None and checkpoint.vae.fast_decoder.arm_in is not None
    with torch.no_grad():  # the arm inputs start at zero; as if trained
        for conv in checkpoint.vae.fast_decoder.arm_in:
            conv.weight.normal_(0.0, 0.5)
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    assert engine.decoder == 'fast' and engine.decoder_reads_arm
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.concatenate([np.eye(3), [[0.0], [0.3], [1.5]]], axis=1)[None]  # 1.5 m ahead of the first camera
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base)
    frames = engine.step(*_motion(1))
    drawn = engine.generator.arm_image(
        engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations
    )
    assert drawn.shape == (1, 9, 16, 24) and drawn[:, :8].sum() > 0  # 4x the 4x6 latent; the arm is in view
    with torch.no_grad():
        latents = engine.latents[:, None]
        expected = to_uint8_images(engine.vae.decode_fast(latents, drawn[:, None])[:, 0]).numpy()
        without = to_uint8_images(engine.vae.decode_fast(latents)[:, 0]).numpy()
    np.testing.assert_array_equal(frames, expected)
    assert not np.array_equal(frames, without)
    full = StreamEngine(checkpoint, batch_size=1, dtype='float32', decoder='full')
    assert not full.decoder_reads_arm


def test_a_light_decoder_reads_the_arm_only_of_a_generator_that_draws_it() -> None:
    from aapt_ros.model.config import ConfigError
    from tests.conftest import tiny_config

    config = tiny_config(sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    with pytest.raises(ConfigError, match='fast_decoder_arm_channels is 5, but the generator draws 9 arm channels'):
        dataclasses.replace(
            config, vae=dataclasses.replace(config.vae, fast_decoder_channels=16, fast_decoder_arm_channels=5)
        )
    with pytest.raises(ConfigError, match='but the generator draws 0 arm channels'):
        plain = tiny_config()
        dataclasses.replace(
            plain, vae=dataclasses.replace(plain.vae, fast_decoder_channels=16, fast_decoder_arm_channels=9)
        )
    with pytest.raises(ConfigError, match=r'needs a light decoder \(fast_decoder_channels > 0\)'):
        dataclasses.replace(config.vae, fast_decoder_arm_channels=9)


def _warp_reading_checkpoint(**vae: object) -> Checkpoint:
    """An untrained tiny checkpoint whose generator warps the first image in pixels and whose light
    decoder reads the warps (vae: more of its settings), with those inputs' weights as if trained."""
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

    config = tiny_config(
        vae={'fast_decoder_channels': 16, 'fast_decoder_warp_planes': 2, **vae}, **PLANE_WARPS_IN_PIXELS
    )
    checkpoint = untrained_checkpoint(config, seed=0)
    fast = checkpoint.vae.fast_decoder
    assert fast is not None and fast.warp_in is not None and fast.blend is not None
    with torch.no_grad():  # the warps' inputs start at zero
        for conv in [*fast.warp_in, fast.blend]:
            conv.weight.normal_(0.0, 0.5)
    return checkpoint


def test_a_light_decoder_that_reads_the_plane_warps_gets_those_of_the_streamed_pose() -> None:
    from aapt_ros.model.config import ConfigError
    from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

    checkpoint = _warp_reading_checkpoint()
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    assert engine.decoder == 'fast' and engine.decoder_reads_warps and not engine.decoder_reads_arm
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.concatenate([np.eye(3), [[0.0], [0.3], [1.5]]], axis=1)[None]  # 1.5 m ahead of the first camera
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base)
    frames = engine.step(*_motion(1))
    assert engine.sink_arms is not None and engine.sink_arms.sum() > 0  # frame 0 shows the arm
    planes = engine.generator.sink_plane_images(
        engine.sink_images, engine.arm_bases, engine.sink_rotations, engine.sink_translations, engine.sink_arms
    )
    assert planes.shape == (1, 2, 6, 32, 48) and planes[:, :, 3].sum() > 0  # the planes are in view
    with torch.no_grad():
        latents = engine.latents[:, None]
        expected = to_uint8_images(engine.vae.decode_fast(latents, planes=planes[:, None])[:, 0]).numpy()
        without = to_uint8_images(engine.vae.decode_fast(latents)[:, 0]).numpy()
    np.testing.assert_array_equal(frames, expected)
    assert not np.array_equal(frames, without)
    assert not StreamEngine(checkpoint, batch_size=1, dtype='float32', decoder='full').decoder_reads_warps
    with pytest.raises(ConfigError, match=r'fast_decoder_warp_planes is 2, but the generator warps .* to 1 planes'):
        tiny_config(
            vae={'fast_decoder_channels': 16, 'fast_decoder_warp_planes': 2},
            **{**PLANE_WARPS_IN_PIXELS, 'sink_warp_base_plane': False},
        )


def _arm_and_copied(engine: StreamEngine, first_joints: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What the engine's light decoder read at its last step, made again: the arm drawing
    (B, A, h s, w s) and the plane warps followed by the arm's (B, P + 1, 6, H, W)."""
    g = engine.generator
    arm, links = g.arm_image_and_links(
        engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations
    )
    planes = g.sink_plane_images(
        engine.sink_images, engine.arm_bases, engine.sink_rotations, engine.sink_translations, engine.sink_arms
    )
    sink_action = torch.tensor(first_joints, dtype=torch.float32)
    arm_warp = g.sink_arm_warp(
        engine.sink_images,
        sink_action,
        g.sink_arm_links(sink_action, engine.arm_bases),
        engine.actions,
        engine.arm_bases,
        engine.sink_rotations,
        engine.sink_translations,
        arm,
        links,
    )
    return arm, torch.cat([planes, arm_warp[:, None]], dim=1)


def test_a_light_decoder_that_copies_the_arm_gets_its_warp_from_the_first_joints() -> None:
    checkpoint = _warp_reading_checkpoint(fast_decoder_arm_channels=9, fast_decoder_arm_warp=True)
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    assert engine.decoder_reads_arm_warp and engine.decoder_reads_warps and engine.decoder_reads_arm
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.2]]])  # standing up 1.2 m ahead
    first_joints = np.array([[0.0, 0.3, 0.0, -0.4, 0.0, 0.0, 0.0]])
    engine.start(np.ones(1, bool), start, first_joints, base)
    assert engine.sink_arm_links is not None and engine.sink_arm_links.sum() > 0  # frame 0 shows the arm
    frames = engine.step(*_motion(1), actions=first_joints + 0.1)
    arm, copied = _arm_and_copied(engine, first_joints)
    assert copied[:, 2, 3].sum() > 0  # the arm is copied from frame 0 somewhere
    copied = copied[:, None]  # (B, 1, P + 1, 6, H, W)
    with torch.no_grad():
        latents = engine.latents[:, None]
        expected = to_uint8_images(engine.vae.decode_fast(latents, arm[:, None], copied)[:, 0]).numpy()
        no_arm = torch.cat([copied[:, :, :2], torch.zeros_like(copied[:, :, 2:])], dim=2)  # no arm copied
        without = to_uint8_images(engine.vae.decode_fast(latents, arm[:, None], no_arm)[:, 0]).numpy()
    np.testing.assert_array_equal(frames, expected)
    assert not np.array_equal(frames, without)


def test_a_light_decoder_that_copies_the_ground_tile_gets_it_folded_from_the_first_image() -> None:
    checkpoint = _warp_reading_checkpoint(
        fast_decoder_arm_channels=9, fast_decoder_arm_warp=True, fast_decoder_ground_tile=2.0
    )
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    assert engine.decoder_reads_ground_tile and engine.ground_tiles is not None and engine.tile_axes is not None
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.2]]])  # standing up 1.2 m ahead
    pose_frame = base.copy()  # the poses' frame: the base's axes, its origin there too
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    assert engine.ground_tiles[:, 3].sum() > 0  # frame 0 shows the ground: texels of the tile are known
    frames = engine.step(*_motion(1))
    arm, planes = _arm_and_copied(engine, np.zeros((1, 7)))
    g = engine.generator
    tile, axes = g.sink_ground_tile(
        engine.sink_images, engine.sink_arms, engine.arm_bases, torch.tensor(pose_frame, dtype=torch.float32), 2.0
    )
    ground = g.ground_tile_image(tile, axes, 2.0, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
    assert ground[:, 3].sum() > 0  # the tile is sampled where rays meet the ground
    near = g.ground_tile_image(
        tile, axes, 2.0, engine.arm_bases, engine.sink_rotations, engine.sink_translations, max_depth=0.01
    )
    assert near[:, 3].sum() == 0  # ... but not beyond a rendered scene's far plane (here 1 cm ahead)
    copied = torch.cat([planes, ground[:, None]], dim=1)[:, None]  # (B, 1, P + 2, 6, H, W)
    with torch.no_grad():
        latents = engine.latents[:, None]
        expected = to_uint8_images(engine.vae.decode_fast(latents, arm[:, None], copied)[:, 0]).numpy()
    np.testing.assert_array_equal(frames, expected)
    # The streams' first images are folded a few at a time (bounded memory): together as alone.
    streams = TILE_FOLD_STREAMS + 2
    images = torch.rand(streams, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    arms, frames_of_poses = (
        engine.sink_arms.repeat(streams, 1, 1, 1),
        torch.tensor(pose_frame).float().repeat(streams, 1, 1),
    )
    bases = torch.tensor(base).float().repeat(streams, 1, 1)
    bases[:, 2, 3] += torch.linspace(0, 0.5, streams)  # each stream's base another distance ahead
    together = g.sink_ground_tile(images, arms, bases, frames_of_poses, 2.0)
    alone = [
        g.sink_ground_tile(images[i : i + 1], arms[:1], bases[i : i + 1], frames_of_poses[:1], 2.0)
        for i in range(streams)
    ]
    for part, parts in zip(together, zip(*alone, strict=True), strict=True):
        torch.testing.assert_close(part, torch.cat(parts))
    # Without the poses' frame there is no tile: nothing of it is copied.
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base)
    assert engine.ground_tiles.abs().sum() == 0
    with pytest.raises(EngineError, match=r'pose_frames must be finite with shape \(1, 3, 4\)'):
        engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, np.zeros((3, 4)))


def test_a_light_decoder_told_the_static_boxes_gets_its_copies_kept_where_they_show_what_the_camera_sees() -> None:
    table = (0.0, 0.0, 0.6, 0.75, 0.5, 0.025)
    checkpoint = _warp_reading_checkpoint(
        fast_decoder_arm_channels=9,
        fast_decoder_arm_warp=True,
        fast_decoder_ground_tile=2.0,
        fast_decoder_static_boxes=(table,),
    )
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    assert engine.decoder_reads_boxes and engine.box_colours is not None and engine.pose_frames is not None
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    base = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.2]]])  # standing up 1.2 m ahead
    pose_frame = base.copy()  # the poses' frame: the base's axes and origin, the table's top face in its z = 0
    pose_frame[0, :, 3] -= 0.625 * base[0, :, 2]
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    assert engine.box_colours[0, 3] == 1  # frame 0 shows the table
    frames = engine.step(*_motion(1))
    arm, copied = _arm_and_copied(engine, np.zeros((1, 7)))
    g, frame = engine.generator, torch.tensor(pose_frame, dtype=torch.float32)
    tile, axes = g.sink_ground_tile(engine.sink_images, engine.sink_arms, engine.arm_bases, frame, 2.0)
    ground = g.ground_tile_image(tile, axes, 2.0, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
    boxes = torch.tensor([table])
    colour = g.sink_box_colour(engine.sink_images, engine.sink_arms, frame, boxes)
    told = g.copies_among_boxes(
        torch.cat([copied, ground[:, None]], dim=1),
        colour,
        boxes,
        frame,
        engine.arm_bases,
        engine.sink_rotations,
        engine.sink_translations,
        tile_last=True,
    )
    assert told[:, 4, 3].sum() > 0  # the table's colour is drawn where rays meet it
    with torch.no_grad():
        expected = to_uint8_images(engine.vae.decode_fast(engine.latents[:, None], arm[:, None], told[:, None])[:, 0])
    np.testing.assert_array_equal(frames, expected.numpy())
    # Without the poses' frame the boxes cannot be placed: no colour, the copies as they were.
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base)
    assert engine.box_colours.abs().sum() == 0 and engine.pose_frames.abs().sum() == 0
    # Pasting what frame 0 never showed: the same decode, then the copies taken as they are there.
    pasting = dataclasses.replace(
        checkpoint,
        config=dataclasses.replace(
            checkpoint.config, vae=dataclasses.replace(checkpoint.config.vae, fast_decoder_paste_unseen=True)
        ),
    )
    engine = StreamEngine(pasting, batch_size=1, dtype='float32')
    assert engine.decoder_pastes_unseen
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    frames = engine.step(*_motion(1))
    _, links = g.arm_image_and_links(engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
    with torch.no_grad():
        pasted = g.paste_unseen(
            engine.vae.decode_fast(engine.latents[:, None], arm[:, None], told[:, None])[:, 0], told, links
        )
    np.testing.assert_array_equal(frames, to_uint8_images(pasted).numpy())
    # ... and then each box face and the background in frame 0's colours (v27).
    scene_pasting = dataclasses.replace(
        pasting,
        config=dataclasses.replace(
            pasting.config,
            vae=dataclasses.replace(pasting.config.vae, fast_decoder_paste_box_faces=True, fast_decoder_paste_sky=True),
        ),
    )
    engine = StreamEngine(scene_pasting, batch_size=1, dtype='float32')
    assert engine.face_colours is not None and engine.sky_colours is not None
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    images = from_uint8_images(torch.from_numpy(start), torch.float32)[:, 0]
    torch.testing.assert_close(
        engine.face_colours, g.sink_face_colours(images, engine.sink_arms, engine.pose_frames, engine.static_boxes)
    )
    frames = engine.step(*_motion(1))
    with torch.no_grad():
        scene = g.paste_boxes_and_sky(
            pasted,
            links,
            told[:, 0],
            g.box_entries(engine.pose_frames, engine.static_boxes, engine.sink_rotations, engine.sink_translations)[1],
            engine.face_colours,
            engine.sky_colours,
            engine.pose_frames,
            engine.arm_bases,
            engine.sink_rotations,
            engine.sink_translations,
        )
    np.testing.assert_array_equal(frames, to_uint8_images(scene).numpy())
    # ... and what frame 0 shows standing on the table top drawn where this camera sees it.
    object_pasting = dataclasses.replace(
        scene_pasting,
        config=dataclasses.replace(
            scene_pasting.config,
            vae=dataclasses.replace(scene_pasting.config.vae, fast_decoder_paste_objects=True),
        ),
    )
    engine = StreamEngine(object_pasting, batch_size=1, dtype='float32')
    assert engine.object_points is not None and engine.object_colours is not None
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    points, colours = g.sink_table_objects(images, engine.sink_arms, engine.pose_frames, engine.static_boxes)
    found = colours[0, 3] > 0.5
    assert 0 < found.sum() < found.numel()  # a random image is no plain top: much of it counts as objects
    # Kept with the objects first, and on the CPU only as many splatted as there are.
    kept = int(found.sum())
    assert engine._object_points_used == kept and (engine.object_colours[0, 3, :kept] > 0.5).all()
    torch.testing.assert_close(engine.object_points[0, :, :kept], points[0][:, found])
    torch.testing.assert_close(engine.object_colours[0, :, :kept], colours[0][:, found])
    frames = engine.step(*_motion(1))
    with torch.no_grad():
        objects = g.paste_table_objects(scene, links, points, colours, engine.sink_rotations, engine.sink_translations)
    assert (objects != scene).any()
    np.testing.assert_array_equal(frames, to_uint8_images(objects).numpy())
    # ... and last the image smoothed and its chroma subsampled (v30).
    finishing = dataclasses.replace(
        scene_pasting,
        config=dataclasses.replace(
            scene_pasting.config,
            vae=dataclasses.replace(scene_pasting.config.vae, fast_decoder_bilateral=20.0),
            camera=dataclasses.replace(scene_pasting.config.camera, chroma_subsampled=True),
        ),
    )
    engine = StreamEngine(finishing, batch_size=1, dtype='float32')
    engine.start(np.ones(1, bool), start, np.zeros((1, 7)), base, pose_frame)
    frames = engine.step(*_motion(1))
    np.testing.assert_array_equal(frames, to_uint8_images(subsample_chroma(bilateral(scene, 20.0))).numpy())
