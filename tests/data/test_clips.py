"""Clips from bags with a local cache of decoded episodes (aapt_ros.data.clips)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aapt_ros.data import clips
from aapt_ros.data.bags import BagError
from aapt_ros.data.clips import (
    ARM_BASE,
    ClipDataset,
    ClipRef,
    default_cache_dir,
    frames_to_float,
    load_episode,
    segments,
)
from aapt_ros.data.mapping import SIM_MAPPING, MappingError, TopicMapping
from tests.data import synthetic_bags
from tests.data.synthetic_bags import NS, START_NS, frame_value, joints_at, position_at, sim_messages, write_bag

STEP_30HZ = round(NS / 30)


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Bags that ClipDataset decoded (rather than found in the cache) during the test."""
    calls: list[Path] = []
    read_episode: Callable[..., Any] = clips.read_episode

    def counting(bag: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(bag))
        return read_episode(bag, *args, **kwargs)

    monkeypatch.setattr(clips, 'read_episode', counting)
    return calls


def _bags(tmp_path: Path, *lengths: int) -> list[Path]:
    return [write_bag(tmp_path / f'bag{i}', sim_messages(n)) for i, n in enumerate(lengths)]


def test_clip_tensors_have_the_documented_shapes_types_and_values(tmp_path: Path) -> None:
    (bag,) = _bags(tmp_path, 12)
    dataset = ClipDataset([bag], SIM_MAPPING, clip_length=4, rate_hz=15.0, image_size=(16, 12), cache_dir=tmp_path)
    clip = dataset[1]  # frames 1..4 of the 15 Hz episode: bag images 2, 4, 6, 8
    assert clip['frames'].shape == (4, 3, 12, 16) and clip['frames'].dtype == torch.uint8
    expected = torch.tensor([frame_value(i) for i in (2, 4, 6, 8)], dtype=torch.uint8)
    torch.testing.assert_close(clip['frames'][:, 0, 0, 0], expected)  # red channel
    torch.testing.assert_close(clip['frames'][:, 1, 5, 7], 255 - expected)  # green = 255 - red
    in_range = frames_to_float(clip['frames'])
    assert in_range.dtype == torch.float32 and in_range.min() >= -1 and in_range.max() <= 1
    t = np.array([2, 4, 6, 8]) * STEP_30HZ / NS
    assert clip['positions'].dtype == clip['orientations'].dtype == clip['actions'].dtype == torch.float32
    torch.testing.assert_close(clip['positions'], torch.from_numpy(position_at(t)).float())
    torch.testing.assert_close(clip['actions'], torch.from_numpy(joints_at(t)).float())
    assert clip['orientations'].shape == (4, 4) and clip['actions'].shape == (4, 7)
    assert clip['stamps_ns'].tolist() == (START_NS + np.array([2, 4, 6, 8]) * STEP_30HZ).tolist()
    assert (int(clip['episode']), int(clip['start'])) == (0, 1)
    base = np.array(synthetic_bags.ARM_BASE)
    base[3:] /= np.linalg.norm(base[3:])  # the bag's quaternion is 0.5 % long
    assert clip[ARM_BASE].shape == (7,) and clip[ARM_BASE].dtype == torch.float32
    torch.testing.assert_close(clip[ARM_BASE], torch.from_numpy(base).float())
    torch.testing.assert_close(dataset[0][ARM_BASE], clip[ARM_BASE])  # one base per episode


def test_the_arm_base_is_cached_and_empty_when_the_mapping_reads_none(tmp_path: Path) -> None:
    old = write_bag(tmp_path / 'old', sim_messages(6, arm_base=None))  # recorded before /tf_static
    no_base = TopicMapping(**{**SIM_MAPPING.as_dict(), 'arm_base_frame': ''})
    dataset = ClipDataset([old], no_base, clip_length=2, cache_dir=tmp_path / 'cache')
    assert dataset[0][ARM_BASE].shape == (0,) and dataset[0][ARM_BASE].dtype == torch.float32
    assert load_episode(dataset.paths[0]).arm_base.shape == (0,)
    with pytest.raises(MappingError, match="arm_base_frame: ''"):
        ClipDataset([old], SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    (bag,) = _bags(tmp_path, 6)
    cached = load_episode(ClipDataset([bag], SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache').paths[0])
    assert cached.arm_base.dtype == np.float64 and cached.arm_base.shape == (7,)
    assert np.linalg.norm(cached.arm_base[3:]) == pytest.approx(1.0)


def test_clip_index_is_deterministic_in_bag_order_with_stride(tmp_path: Path) -> None:
    bags = _bags(tmp_path, 7, 3, 10)
    make = lambda: ClipDataset(bags, SIM_MAPPING, clip_length=3, stride=2, cache_dir=tmp_path / 'cache')  # noqa: E731
    dataset = make()
    assert dataset.clips == (
        ClipRef(0, 0), ClipRef(0, 2), ClipRef(0, 4),
        ClipRef(1, 0),
        ClipRef(2, 0), ClipRef(2, 2), ClipRef(2, 4), ClipRef(2, 6),
    )  # fmt: skip
    assert make().clips == dataset.clips
    assert len(dataset) == 8
    assert dataset[-1]['stamps_ns'][0] == START_NS + 6 * STEP_30HZ


def test_clips_never_span_a_gap_in_an_episode(tmp_path: Path) -> None:
    stamps = [START_NS + i * STEP_30HZ for i in (0, 1, 2, 3, 10, 11, 12)]  # no image for 200 ms
    bag = write_bag(tmp_path / 'bag', sim_messages(13, image_stamps_ns=stamps))
    dataset = ClipDataset([bag], SIM_MAPPING, clip_length=3, cache_dir=tmp_path / 'cache')
    assert dataset.clips == (ClipRef(0, 0), ClipRef(0, 1), ClipRef(0, 4))
    resampled = ClipDataset([bag], SIM_MAPPING, clip_length=2, rate_hz=15.0, cache_dir=tmp_path / 'cache')
    assert resampled.clips == (ClipRef(0, 0), ClipRef(0, 2))  # 15 Hz frames: images 0, 2 | 10, 12


def test_segments_split_at_steps_longer_than_one_and_a_half_intervals() -> None:
    stamps = np.array([0, 10, 20, 36, 52, 60])
    assert segments(stamps, 10.0) == [(0, 3), (3, 4), (4, 6)]
    assert segments(stamps[:1], 10.0) == [(0, 1)]


def test_second_dataset_reads_the_cache_not_the_bags(tmp_path: Path, decode_calls: list[Path]) -> None:
    bags = _bags(tmp_path, 5, 6)
    first = ClipDataset(bags, SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    assert decode_calls == bags
    second = ClipDataset(bags, SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    assert decode_calls == bags  # no new decode
    assert len(list((tmp_path / 'cache').glob('*.npz'))) == 2
    for index in (0, 3, len(first) - 1):
        a, b = first[index], second[index]
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def test_changed_settings_or_a_rewritten_bag_are_decoded_again(tmp_path: Path, decode_calls: list[Path]) -> None:
    (bag,) = _bags(tmp_path, 5)
    cache = tmp_path / 'cache'
    ClipDataset([bag], SIM_MAPPING, clip_length=2, cache_dir=cache)
    ClipDataset([bag], SIM_MAPPING, clip_length=2, rate_hz=15.0, cache_dir=cache)
    ClipDataset([bag], SIM_MAPPING, clip_length=2, image_size=(8, 8), cache_dir=cache)
    ClipDataset([bag], TopicMapping(**{**SIM_MAPPING.as_dict(), 'max_skew_s': 0.02}), clip_length=2, cache_dir=cache)
    ClipDataset([bag], TopicMapping(**{**SIM_MAPPING.as_dict(), 'arm_base_frame': ''}), clip_length=2, cache_dir=cache)
    assert len(decode_calls) == 5
    ClipDataset([bag], SIM_MAPPING, clip_length=3, stride=2, cache_dir=cache)  # clip settings: same episode
    assert len(decode_calls) == 5
    data = next(bag.glob('*.mcap'))
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000_000))
    ClipDataset([bag], SIM_MAPPING, clip_length=2, cache_dir=cache)
    assert len(decode_calls) == 6


def test_an_unreadable_cache_file_is_decoded_again(tmp_path: Path, decode_calls: list[Path]) -> None:
    (bag,) = _bags(tmp_path, 4)
    dataset = ClipDataset([bag], SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    dataset.paths[0].write_bytes(b'torn write')
    again = ClipDataset([bag], SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    assert len(decode_calls) == 2
    torch.testing.assert_close(again[0]['frames'], dataset[0]['frames'])
    assert not list((tmp_path / 'cache').glob('.*.tmp'))  # the temporary file was renamed into place


def test_a_data_loader_batches_clips(tmp_path: Path) -> None:
    dataset = ClipDataset(_bags(tmp_path, 8), SIM_MAPPING, clip_length=3, cache_dir=tmp_path / 'cache')
    batch = next(iter(DataLoader(dataset, batch_size=4, shuffle=False)))
    assert batch['frames'].shape == (4, 3, 3, 24, 32) and batch['actions'].shape == (4, 3, 7)
    assert batch[ARM_BASE].shape == (4, 7)
    assert batch['start'].tolist() == [0, 1, 2, 3]


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert default_cache_dir() == tmp_path / 'aapt_ros' / 'episodes'


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'clip_length': 0}, 'clip_length and stride must be at least 1, got 0 and 1'),
        ({'clip_length': 2, 'stride': 0}, 'clip_length and stride must be at least 1, got 2 and 0'),
        ({'clip_length': 6}, 'no episode has 6 consecutive frames without a gap'),
    ],
)
def test_bad_clip_settings_are_rejected(tmp_path: Path, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClipDataset(_bags(tmp_path, 5), SIM_MAPPING, cache_dir=tmp_path / 'cache', **kwargs)


def test_no_bags_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='needs at least one bag'):
        ClipDataset([], SIM_MAPPING, clip_length=2, cache_dir=tmp_path)


def test_bag_errors_reach_the_caller(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=f'bag not found: {tmp_path / "none"}'):
        ClipDataset([tmp_path / 'none'], SIM_MAPPING, clip_length=2, cache_dir=tmp_path / 'cache')
    (bag,) = _bags(tmp_path, 3)
    mapping = TopicMapping('/camera/image_raw', pose_topic='/tf')
    with pytest.raises(MappingError, match=r"no topic\(s\) \['/tf'\]"):
        ClipDataset([bag], mapping, clip_length=2, cache_dir=tmp_path / 'cache')
    assert not list((tmp_path / 'cache').glob('*'))  # nothing cached for a failed decode
