"""The sample recording shipped for tests and `make demo`."""

from __future__ import annotations

from pathlib import Path

import yaml

from aapt_ros.data.episodes import read_episode, sim_mapping
from aapt_ros.data.mapping import SIM_COMPRESSED_MAPPING
from aapt_ros.data.sim_recorder import SPLIT_SEEDS

SAMPLE = Path(__file__).resolve().parents[2] / 'aapt_ros' / 'data' / 'samples' / 'sim_episode'


def test_sample_bag_is_small_and_a_held_out_test_episode() -> None:
    assert sum(f.stat().st_size for f in SAMPLE.iterdir()) <= 5 * 2**20
    recording = yaml.safe_load((SAMPLE / 'recording.yaml').read_text())
    seed = recording['seeds'][0]
    test_range = SPLIT_SEEDS['test']
    assert test_range[0] <= seed <= test_range[-1]


def test_sample_bag_reads_through_the_sim_mapping() -> None:
    assert sim_mapping(SAMPLE) == SIM_COMPRESSED_MAPPING  # with the arm base from /tf_static
    episode = read_episode(SAMPLE, SIM_COMPRESSED_MAPPING, rate_hz=15.0)
    assert episode.frames.shape == (180, 128, 128, 3)
    assert episode.actions.shape == (180, 7) and episode.skipped == 0
    assert episode.arm_base.shape == (7,) and abs(episode.arm_base[2] - 0.625) < 1e-6  # on the table top
