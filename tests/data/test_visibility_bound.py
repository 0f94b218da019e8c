"""tools/visibility_bound.py: the reprojection geometry, and a re-simulated recording."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip('pybullet')

from aapt_ros.data.episodes import read_episode, sim_mapping
from aapt_ros.data.sim_episode import EpisodeSpec, record_episode
from aapt_ros.data.sim_scene import Intrinsics
from aapt_ros.eval.replay import main as replay_main
from tests.tool_scripts import load_tool


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    return load_tool('visibility_bound')


def test_a_sideways_step_over_a_wall_shifts_the_first_frame_and_leaves_a_strip_unseen(tool: ModuleType) -> None:
    k = Intrinsics.from_fov(32, 24, 60.0)
    first = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    wall = np.full((24, 32), 2.0)  # a wall 2 m ahead, square to the camera
    bodies = np.where(np.arange(24)[:, None] < 12, 5, 0) * np.ones(
        (1, 32), int
    )  # upper half: object 5, lower: ground 0
    arm, surfaces = 7, (0,)
    identity = (np.eye(3), np.zeros(3))
    start = tool.View(first, wall, bodies, identity)
    images, masks = tool.oracle_frame(start, start, k, arm, surfaces)
    for image in images.values():
        np.testing.assert_array_equal(image, first)
    assert masks['seen'].all()
    shift = 4  # pixels: the camera moves right by 4 px at the wall's depth
    step = (np.eye(3), np.array([shift * 2.0 / k.fx, 0.0, 0.0]))
    later = np.roll(first, -shift, axis=1)  # what the camera sees after the step, new strip included
    images, masks = tool.oracle_frame(start, tool.View(later, wall, bodies, step), k, arm, surfaces)
    moved = images['oracle']
    np.testing.assert_array_equal(moved[:, : 32 - shift], first[:, shift:])  # the scene slides left
    assert masks['unseen'][:, 32 - shift :].all() and masks['seen'][:, : 32 - shift].all()
    np.testing.assert_array_equal(masks['unseen_surface'], masks['unseen'] & (bodies == 0))
    prior, colour = images['surface_prior_oracle'], images['surface_colour_oracle']
    np.testing.assert_array_equal(prior[12:], later[12:])  # the unseen ground strip: the recorded colour
    np.testing.assert_array_equal(
        colour[12:, 32 - shift :], np.broadcast_to(first[12:].mean((0, 1)).round(), (12, shift, 3))
    )
    for image in (prior, colour):
        np.testing.assert_array_equal(image[:12], moved[:12])  # the object's unseen strip: as the geometric oracle
        np.testing.assert_array_equal(image[:, : 32 - shift], moved[:, : 32 - shift])


def test_the_re_simulated_episode_is_the_recorded_one_and_the_shares_add_up(tool: ModuleType, tmp_path: Path) -> None:
    bag = tmp_path / 'episode_000007'
    record_episode(EpisodeSpec(seed=7, seconds=2.0, width=64, height=48), bag)
    result = tool.episode_bound(bag)
    assert result['seed'] == 7 and list(result['horizons']) == ['1s']  # 2 s: no 5 s horizon
    one = result['horizons']['1s']
    assert one['render_psnr'] > 25  # the same scene, arm and camera, up to JPEG
    assert sum(one[s] for s in tool.SHARES) == pytest.approx(1.0)
    assert one['seen'] > 0.2 and one['oracle_psnr'] > 15
    assert 0 <= one['unseen_surface'] <= one['unseen'] and one['surface_prior_oracle_psnr'] >= one['oracle_psnr']
    output = tmp_path / 'bound.json'
    assert tool.main([str(bag), '--output', str(output)]) == 0
    assert json.loads(output.read_text())['mean']['1s']['seen'] == pytest.approx(one['seen'])
    # Each oracle per pixel class: the surface prior paints the unseen ground and table as recorded.
    prior = one['oracle_classes']['surface_prior_oracle']
    assert prior['unseen_surface']['psnr'] in (math.inf, None) or prior['unseen_surface']['psnr'] > 25
    assert sum(c['error_share'] for c in prior.values()) == pytest.approx(1.0)
    assert tool.main([str(bag), '--output', str(output)]) == 1  # never overwrites


def test_generated_frames_are_scored_per_pixel_class(tool: ModuleType, tiny_model: Path, tmp_path: Path) -> None:
    bag = tmp_path / 'episode_000005'
    record_episode(EpisodeSpec(seed=5, seconds=2.0, width=48, height=32), bag)  # the tiny model's image size
    frames = read_episode(bag, sim_mapping(bag), rate_hz=15.0).frames
    perfect = tool.episode_bound(bag, generated=list(frames))['horizons']['1s']['generated']
    assert all(perfect[c]['psnr'] in (math.inf, None) for c in tool.CLASSES)  # a perfect model: no error anywhere
    assert replay_main([str(bag), '--model', str(tiny_model), '--output-dir', str(tmp_path / 'eval')]) == 0
    output = tmp_path / 'bound.json'
    assert tool.main([str(bag), '--output', str(output), '--generated', str(tmp_path / 'eval')]) == 0
    scores = json.loads(output.read_text())['mean']['1s']['generated']
    assert sorted(scores) == sorted(tool.CLASSES)
    assert sum(s['error_share'] for s in scores.values()) == pytest.approx(1.0)
    assert 0 < scores['seen']['psnr'] < 60  # an untrained model is wrong where the first frame shows the scene
    # The finer split by body covers the same pixels: the same error and values in all, split further.
    by_body = json.loads(output.read_text())['mean']['1s']['generated_by_body']
    assert sorted(by_body) == sorted(tool.BODY_CLASSES)
    for key in ('squared_error', 'values'):
        assert sum(c[key] for c in by_body.values()) == pytest.approx(sum(c[key] for c in scores.values()))
    seen = [by_body[f'seen_{body}']['values'] for body in ('ground', 'table', 'other')]
    assert sum(seen) == scores['seen']['values'] and seen[0] > 0
    # ... and the unseen ground and table split by why frame 0 does not show them.
    unseen = json.loads(output.read_text())['mean']['1s']['generated_unseen']
    assert sorted(unseen) == sorted(tool.UNSEEN_CLASSES)
    for body in ('ground', 'table'):
        parts = [unseen[f'unseen_{body}_{why}']['values'] for why in ('outside', 'behind_arm', 'behind_other')]
        assert sum(parts) == by_body[f'unseen_{body}']['values']
    assert tool.main([str(bag), '--output', str(tmp_path / 'none.json'), '--generated', str(tmp_path)]) == 1
