from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aapt_ros.model.camera import Pose, PoseError
from aapt_ros.model.checkpoint import load_checkpoint
from aapt_ros.streaming.session import SessionError, StreamingSession


def _poses(n: int) -> list[Pose]:
    return [Pose((0.02 * i, 0.0, 0.01 * i), (0.0, 0.0, 0.0, 1.0)) for i in range(n)]


def _run(session: StreamingSession, n: int, first_frame: np.ndarray | None = None) -> list[np.ndarray]:
    poses, action = _poses(n), np.zeros(len(session.action_names))
    frames = [session.start(poses[0], action, first_frame=first_frame)]
    frames += [session.step(p, action + 0.1 * i) for i, p in enumerate(poses[1:])]
    return frames


def test_frames_are_rgb8_of_the_model_size(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model))
    frames = _run(session, 5)
    assert all(f.shape == (32, 48, 3) and f.dtype == np.uint8 for f in frames)
    assert session.frame_index == 4


def test_same_seed_and_inputs_give_the_same_frames_and_reset_replays_them(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model), seed=7)
    first = _run(session, 6)
    session.reset()
    again = _run(session, 6)
    other = _run(StreamingSession(load_checkpoint(tiny_model), seed=7), 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_different_seeds_give_different_frames(tiny_model: Path) -> None:
    a = _run(StreamingSession(load_checkpoint(tiny_model), seed=1), 3)
    b = _run(StreamingSession(load_checkpoint(tiny_model), seed=2), 3)
    assert not np.array_equal(a[2], b[2])


def test_first_frame_is_the_start_image(tiny_model: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert np.array_equal(_run(StreamingSession(load_checkpoint(tiny_model)), 1, image)[0], image)


def test_window_fill_grows_to_the_window_and_stays(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model))
    assert session.window_fill == 0
    _run(session, 2)
    assert session.window_fill == 2
    _run(session, 12)
    assert session.window_fill == session.window_size == 4


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_half_precision_runs(tiny_model: Path, dtype: str) -> None:
    frames = _run(StreamingSession(load_checkpoint(tiny_model), dtype=dtype), 3)
    assert frames[-1].shape == (32, 48, 3)


@pytest.mark.parametrize('steps', [1, 4])
def test_multi_step_sampling_runs(tiny_model: Path, steps: int) -> None:
    frames = _run(StreamingSession(load_checkpoint(tiny_model), sampling_steps=steps), 3)
    assert frames[-1].shape == (32, 48, 3)


def test_step_before_start_is_an_error(tiny_model: Path) -> None:
    with pytest.raises(SessionError, match=r'step\(\) before start\(\)'):
        StreamingSession(load_checkpoint(tiny_model)).step(Pose.identity())


def test_wrong_action_length_is_an_error_that_lists_the_names(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model))
    session.start(Pose.identity())
    with pytest.raises(SessionError, match=r"action has 3 values, the model expects 7: \['lbr_iiwa_joint_1'"):
        session.step(Pose.identity(), np.zeros(3))


def test_non_finite_action_is_an_error(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model))
    session.start(Pose.identity())
    with pytest.raises(SessionError, match='action is not finite'):
        session.step(Pose.identity(), np.full(7, np.nan))


@pytest.mark.parametrize(
    'frame', [np.zeros((48, 32, 3), np.uint8), np.zeros((32, 48, 3), np.float32), np.zeros((32, 48), np.uint8)]
)
def test_start_image_of_the_wrong_size_or_type_is_an_error(tiny_model: Path, frame: np.ndarray) -> None:
    with pytest.raises(SessionError, match=r'start image must be uint8 RGB of shape \(32, 48, 3\)'):
        StreamingSession(load_checkpoint(tiny_model)).start(Pose.identity(), first_frame=frame)


def test_bad_pose_is_rejected_and_the_stream_continues(tiny_model: Path) -> None:
    session = StreamingSession(load_checkpoint(tiny_model))
    session.start(Pose.identity())
    with pytest.raises(PoseError):
        session.step(Pose((np.nan, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
    assert session.frame_index == 0
    session.step(Pose.identity())
    assert session.frame_index == 1


def test_another_window_streams_as_a_model_configured_with_it(tiny_model: Path, tmp_path: Path) -> None:
    edited = tmp_path / 'window7'
    shutil.copytree(tiny_model, edited)
    config = (edited / 'config.yaml').read_text()
    assert 'window_frames: 4' in config
    (edited / 'config.yaml').write_text(config.replace('window_frames: 4', 'window_frames: 7'))
    wide = StreamingSession(load_checkpoint(tiny_model), window_frames=7)
    assert wide.window_size == 7
    trained, configured = StreamingSession(load_checkpoint(tiny_model)), StreamingSession(load_checkpoint(edited))
    frames = [_run(session, 12) for session in (wide, configured, trained)]
    for a, b in zip(frames[0], frames[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(frames[0], frames[2], strict=True))  # past frame 4
    with pytest.raises(SessionError, match='window_frames must be >= 1, got 0'):
        StreamingSession(load_checkpoint(tiny_model), window_frames=0)
    with pytest.raises(SessionError, match='window_frames must be >= 2, got 1'):  # the config's own bound
        StreamingSession(load_checkpoint(tiny_model), window_frames=1)
