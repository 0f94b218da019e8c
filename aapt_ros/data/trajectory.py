"""Smooth synthetic robot trajectories without images: a camera orbiting a workspace while an
arm moves. Enough to drive a generator_node (or a test) without rendering anything; the
camera helpers (``look_at``) serve the pybullet recorder too.

Usage::

    python -m aapt_ros.data.trajectory poses_only_bag --seconds 12 --seed 0

The bag holds ``/camera/pose`` (geometry_msgs/PoseStamped of the camera optical frame in
``world``) and ``/joint_states`` (sensor_msgs/JointState of a KUKA iiwa), stamped alike at a
fixed rate, with bag time equal to the header stamp.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aapt_ros.data.bags import TYPESTORE, BagError, BagWriter, Storage
from aapt_ros.model.config import KUKA_IIWA_JOINTS

POSE_TOPIC = '/camera/pose'
JOINT_TOPIC = '/joint_states'
WORLD_FRAME = 'world'
# Conservative joint ranges (rad) inside the iiwa's limits, so commands stay reachable.
IIWA_AMPLITUDES = np.array([1.2, 0.8, 1.2, 1.0, 1.2, 1.0, 1.5])


@dataclass(frozen=True)
class Trajectory:
    stamps_ns: np.ndarray  # (N,) int64
    positions: np.ndarray  # (N, 3) camera optical frame origin in the world
    orientations: np.ndarray  # (N, 4) quaternion x, y, z, w of the optical frame
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray  # (N, J)


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) of an optical frame (z forward, x right, y down) at ``position``
    looking at ``target``, with the world's +z up."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return rotation_to_quaternion(np.stack([x, y, z], axis=1))


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w), w >= 0 (Shepperd's method)."""
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    quat = np.asarray(q)
    unit: np.ndarray = quat * (1 if quat[3] >= 0 else -1) / np.linalg.norm(quat)
    return unit


def orbit_trajectory(seconds: float, rate_hz: float, seed: int, start_ns: int = 1_000_000_000) -> Trajectory:
    """Camera on a slowly wobbling orbit around the workspace; arm joints on smooth sinusoids."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    azimuth = rng.uniform(0, 2 * np.pi) + 0.25 * t + 0.15 * np.sin(0.4 * t)
    radius = 1.4 + 0.2 * np.sin(0.3 * t + rng.uniform(0, 2 * np.pi))
    height = 0.9 + 0.15 * np.sin(0.5 * t + rng.uniform(0, 2 * np.pi))
    positions = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], axis=1)
    target = np.array([0.0, 0.0, 0.4])
    orientations = np.stack([look_at(p, target) for p in positions])
    freqs = rng.uniform(0.1, 0.4, size=len(KUKA_IIWA_JOINTS))
    phases = rng.uniform(0, 2 * np.pi, size=len(KUKA_IIWA_JOINTS))
    joints = IIWA_AMPLITUDES * np.sin(2 * np.pi * freqs * t[:, None] + phases)
    stamps = start_ns + np.round(t * 1e9).astype(np.int64)
    return Trajectory(stamps, positions, orientations, KUKA_IIWA_JOINTS, joints)


def write_trajectory_bag(trajectory: Trajectory, path: str | Path, *, storage: Storage = Storage.MCAP) -> Path:
    """Write the trajectory as PoseStamped and JointState messages (bag time = header stamp)."""
    types = TYPESTORE.types
    Header, Time = types['std_msgs/msg/Header'], types['builtin_interfaces/msg/Time']
    Pose, Point, Quaternion = (
        types['geometry_msgs/msg/Pose'],
        types['geometry_msgs/msg/Point'],
        types['geometry_msgs/msg/Quaternion'],
    )
    PoseStamped, JointState = types['geometry_msgs/msg/PoseStamped'], types['sensor_msgs/msg/JointState']
    with BagWriter(path, storage=storage) as writer:
        for i, stamp in enumerate(trajectory.stamps_ns.tolist()):
            sec, nanosec = divmod(stamp, 1_000_000_000)
            header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=WORLD_FRAME)
            joints = JointState(
                header=header,
                name=list(trajectory.joint_names),
                position=trajectory.joint_positions[i].astype(np.float64),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            pose = PoseStamped(
                header=header,
                pose=Pose(
                    position=Point(*trajectory.positions[i]), orientation=Quaternion(*trajectory.orientations[i])
                ),
            )
            # Actions first: a node triggered by the pose then sees the action of the same instant.
            for topic, msg in ((JOINT_TOPIC, joints), (POSE_TOPIC, pose)):
                writer.write(topic, msg.__msgtype__, stamp, bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__)))
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('output', type=Path, help='bag folder to create (must not exist)')
    parser.add_argument('--seconds', type=float, default=12.0, help='duration of the trajectory')
    parser.add_argument('--rate', type=float, default=15.0, help='message rate in Hz')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random orbit and joint motion')
    parser.add_argument('--storage', choices=[s.value for s in Storage], default=Storage.MCAP.value, help='bag storage')
    args = parser.parse_args(argv)
    try:
        path = write_trajectory_bag(
            orbit_trajectory(args.seconds, args.rate, args.seed), args.output, storage=Storage(args.storage)
        )
    except BagError as err:
        print(f'ERROR: {err}; see --help', file=sys.stderr)
        return 1
    print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
