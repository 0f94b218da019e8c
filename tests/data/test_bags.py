from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from aapt_ros.data.bags import BagError, BagWriter, Storage, read_messages
from aapt_ros.data.trajectory import JOINT_TOPIC, POSE_TOPIC, orbit_trajectory, write_trajectory_bag
from aapt_ros.model.camera import Pose
from aapt_ros.model.config import KUKA_IIWA_JOINTS


@pytest.mark.parametrize('storage', list(Storage))
def test_trajectory_bag_round_trips_through_rclpy_messages(tmp_path: Path, storage: Storage) -> None:
    trajectory = orbit_trajectory(seconds=2.0, rate_hz=10.0, seed=3)
    write_trajectory_bag(trajectory, tmp_path / 'bag', storage=storage)
    messages = list(read_messages(tmp_path / 'bag'))
    poses = [deserialize_message(m.data, PoseStamped) for m in messages if m.topic == POSE_TOPIC]
    joints = [deserialize_message(m.data, JointState) for m in messages if m.topic == JOINT_TOPIC]
    assert len(poses) == len(joints) == 20
    assert [m.topic for m in messages[:2]] == [JOINT_TOPIC, POSE_TOPIC]  # action before its pose
    p = poses[5]
    assert p.header.stamp.sec * 10**9 + p.header.stamp.nanosec == trajectory.stamps_ns[5]
    np.testing.assert_allclose([p.pose.position.x, p.pose.position.y, p.pose.position.z], trajectory.positions[5])
    assert list(joints[5].name) == list(KUKA_IIWA_JOINTS)
    np.testing.assert_allclose(joints[5].position, trajectory.joint_positions[5])


def test_trajectory_camera_looks_at_the_workspace_with_unit_quaternions() -> None:
    trajectory = orbit_trajectory(seconds=3.0, rate_hz=15.0, seed=0)
    for position, orientation in zip(trajectory.positions, trajectory.orientations, strict=True):
        pose = Pose(tuple(position), tuple(orientation)).validated()  # type: ignore[arg-type]
        forward = pose.rotation()[:, 2]  # optical z
        to_target = np.array([0.0, 0.0, 0.4]) - position
        assert np.dot(forward, to_target / np.linalg.norm(to_target)) > 0.999
        assert pose.rotation()[2, 1] < 0  # optical y points down in the world


def test_writer_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / 'bag').mkdir()
    with pytest.raises(BagError, match='refusing to overwrite'):
        BagWriter(tmp_path / 'bag')


def test_reading_a_missing_topic_lists_the_bag_topics(tmp_path: Path) -> None:
    write_trajectory_bag(orbit_trajectory(1.0, 5.0, 0), tmp_path / 'bag')
    with pytest.raises(BagError, match=r"no topic\(s\) \['/camera/image_raw'\]; its topics: .*'/camera/pose'"):
        list(read_messages(tmp_path / 'bag', ['/camera/image_raw']))


def test_reading_a_missing_or_broken_bag_names_it(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=f'bag not found: {tmp_path / "none"}'):
        list(read_messages(tmp_path / 'none'))
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'metadata.yaml').write_text('not: [a bag')
    with pytest.raises(BagError, match=f'cannot read bag {tmp_path / "broken"}'):
        list(read_messages(tmp_path / 'broken'))
