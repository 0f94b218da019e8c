"""One simulated episode -> one rosbag2 folder (used by ``aapt-record-sim``, ``sim_recorder.py``).

Once, before the first frame and stamped like it: ``/tf_static`` (tf2_msgs/TFMessage) with one
transform ``world`` -> ``lbr_iiwa_link_0``, the pose of the arm's URDF root link (placed at a random
x, y and yaw per scene, fixed for the episode), so that the arm can be drawn from its joint angles
by forward kinematics in the frame of the camera poses.

Per frame, with bag time = header stamp = sim time (the first frame at 1 s, after the scene has
settled), in this order:

- ``/joint_states`` (JointState): measured position and velocity of the 7 joints, as pictured;
- ``/joint_commands`` (JointState): the position targets sent at that instant (they move the arm
  in the following frames);
- ``/camera/camera_info`` (CameraInfo) and ``/camera/image_raw`` (Image, rgb8) or, compressed,
  ``/camera/image_raw/compressed`` (CompressedImage, ``rgb8; jpeg compressed bgr8`` or png);
- ``/camera/pose`` (PoseStamped in ``world``): the optical frame (z forward, x right, y down),
  last, so that a node triggered by the pose has already seen the same instant's joints.

Images and CameraInfo have frame_id ``camera_optical_frame``. The seed fixes everything: scene,
arm motion, camera path (and, unless given, the camera mode) come from independent streams of
``np.random.SeedSequence(seed)``, so forcing a camera mode keeps the scene and arm motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from aapt_ros.data.bags import TYPESTORE, BagWriter, Storage
from aapt_ros.data.sim_motion import CameraMode, CameraPath, camera_path, joint_command_path
from aapt_ros.data.sim_scene import (
    ARM_BASE_FRAME,
    PHYSICS_HZ,
    SETTLE_SECONDS,
    Intrinsics,
    Scene,
    build_scene,
    bullet_client,
)
from aapt_ros.data.trajectory import JOINT_TOPIC, POSE_TOPIC, WORLD_FRAME
from aapt_ros.model.config import KUKA_IIWA_JOINTS

IMAGE_TOPIC = '/camera/image_raw'
COMPRESSED_TOPIC = '/camera/image_raw/compressed'
CAMERA_INFO_TOPIC = '/camera/camera_info'
COMMAND_TOPIC = '/joint_commands'
TF_STATIC_TOPIC = '/tf_static'
OPTICAL_FRAME = 'camera_optical_frame'
START_NS = round(SETTLE_SECONDS * 1e9)  # the first frame's sim time: the scene settles before it


class Compression(str, Enum):
    NONE = 'none'
    JPEG = 'jpeg'
    PNG = 'png'


COMPRESSED_FORMATS = {Compression.JPEG: 'rgb8; jpeg compressed bgr8', Compression.PNG: 'rgb8; png compressed bgr8'}


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything one episode depends on: the same spec gives the same bag."""

    seed: int
    seconds: float
    rate_hz: float = 15.0
    width: int = 160
    height: int = 120
    horizontal_fov_deg: float = 60.0
    camera_mode: CameraMode | None = None  # None: drawn from the seed
    compression: Compression = Compression.JPEG
    jpeg_quality: int = 90
    storage: Storage = Storage.MCAP
    shadows: bool = True

    @property
    def frames(self) -> int:
        return round(self.seconds * self.rate_hz)


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    path: str
    frames: int
    camera_mode: str


@dataclass(frozen=True)
class EpisodePlan:
    """What an episode's seed fixes before anything is simulated: its camera mode and path, the
    arm's joint commands, and the seed of its scene."""

    spec: EpisodeSpec
    mode: CameraMode
    camera: CameraPath
    commands: np.ndarray  # (frames, 7) joint position targets, one per frame
    scene_seed: np.random.SeedSequence

    @property
    def steps_per_frame(self) -> int:
        """Physics steps between two frames."""
        return max(1, round(PHYSICS_HZ / self.spec.rate_hz))

    def build_scene(self, client: int) -> Scene:
        """The episode's scene in ``client``, the arm at the first command."""
        rng = np.random.default_rng(self.scene_seed)
        return build_scene(client, rng, self.commands[0], rate_hz=self.spec.rate_hz, shadows=self.spec.shadows)


def plan_episode(spec: EpisodeSpec) -> EpisodePlan:
    """The plan ``record_episode`` follows; re-simulating a recorded episode starts from the same one."""
    scene_seq, arm_seq, camera_seq, mode_seq = np.random.SeedSequence(spec.seed).spawn(4)
    mode = spec.camera_mode or list(CameraMode)[int(np.random.default_rng(mode_seq).integers(len(CameraMode)))]
    times = np.arange(spec.frames) / spec.rate_hz
    commands = joint_command_path(times, np.random.default_rng(arm_seq))
    return EpisodePlan(spec, mode, camera_path(mode, times, np.random.default_rng(camera_seq)), commands, scene_seq)


def record_episode(spec: EpisodeSpec, path: str | Path) -> EpisodeResult:
    """Simulate and render one episode into a new rosbag2 folder ``path``."""
    plan = plan_episode(spec)
    mode, camera, commands = plan.mode, plan.camera, plan.commands
    k = Intrinsics.from_fov(spec.width, spec.height, spec.horizontal_fov_deg)
    messages = _Messages(k)
    with bullet_client() as client, BagWriter(path, storage=spec.storage) as writer:
        scene = plan.build_scene(client)
        # The base is fixed, so one static transform at the first frame's stamp holds for the episode;
        # reading it draws no random number, so a seed's images stay what they were without it.
        base = messages.static_transform(START_NS, ARM_BASE_FRAME, *scene.arm_base_pose())
        _write(writer, TF_STATIC_TOPIC, START_NS, base)
        for i in range(spec.frames):
            stamp = START_NS + round(i * 1e9 / spec.rate_hz)
            position, velocity = scene.joint_state()
            image = scene.render(k, camera.positions[i], camera.orientations[i])
            batch = (  # joints before the pose: a node triggered by the pose sees the same instant's state
                (JOINT_TOPIC, messages.joints(stamp, position, velocity)),
                (COMMAND_TOPIC, messages.joints(stamp, commands[i], np.zeros(0))),
                (CAMERA_INFO_TOPIC, messages.camera_info(stamp)),
                _image_message(messages, stamp, image, spec),
                (POSE_TOPIC, messages.pose(stamp, camera.positions[i], camera.orientations[i])),
            )
            for topic, msg in batch:
                _write(writer, topic, stamp, msg)
            scene.command(commands[i])
            scene.step(plan.steps_per_frame)
    return EpisodeResult(spec.seed, str(path), spec.frames, mode.value)


def _write(writer: BagWriter, topic: str, stamp: int, msg: Any) -> None:
    """Serialise a rosbags message to CDR and write it at bag time ``stamp``."""
    writer.write(topic, msg.__msgtype__, stamp, bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__)))


def _image_message(messages: _Messages, stamp: int, image: np.ndarray, spec: EpisodeSpec) -> tuple[str, Any]:
    if spec.compression is Compression.NONE:
        return IMAGE_TOPIC, messages.image(stamp, image)
    params = [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality] if spec.compression is Compression.JPEG else []
    ok, encoded = cv2.imencode(f'.{spec.compression.value}', image[..., ::-1], params)  # OpenCV encodes BGR
    assert ok, f'OpenCV failed to encode a {image.shape} image as {spec.compression.value}'
    return COMPRESSED_TOPIC, messages.compressed(stamp, COMPRESSED_FORMATS[spec.compression], encoded.reshape(-1))


class _Messages:
    """Builds the rosbags message objects of one episode."""

    def __init__(self, k: Intrinsics):
        self.k = k
        self.types = TYPESTORE.types
        kk = k.matrix()
        self.camera_k = kk.reshape(-1)
        self.camera_p = np.concatenate([kk, np.zeros((3, 1))], axis=1).reshape(-1)

    def header(self, stamp: int, frame_id: str) -> Any:
        sec, nanosec = divmod(stamp, 1_000_000_000)
        return self.types['std_msgs/msg/Header'](
            stamp=self.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id
        )

    def joints(self, stamp: int, position: np.ndarray, velocity: np.ndarray) -> Any:
        return self.types['sensor_msgs/msg/JointState'](
            header=self.header(stamp, ''),
            name=list(KUKA_IIWA_JOINTS),
            position=position.astype(np.float64),
            velocity=velocity.astype(np.float64),
            effort=np.zeros(0),
        )

    def camera_info(self, stamp: int) -> Any:
        roi = self.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.types['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp, OPTICAL_FRAME),
            height=self.k.height,
            width=self.k.width,
            distortion_model='plumb_bob',
            d=np.zeros(5),
            k=self.camera_k,
            r=np.eye(3).reshape(-1),
            p=self.camera_p,
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def image(self, stamp: int, rgb: np.ndarray) -> Any:
        height, width, _ = rgb.shape
        return self.types['sensor_msgs/msg/Image'](
            header=self.header(stamp, OPTICAL_FRAME),
            height=height,
            width=width,
            encoding='rgb8',
            is_bigendian=0,
            step=3 * width,
            data=rgb.reshape(-1),
        )

    def compressed(self, stamp: int, fmt: str, data: np.ndarray) -> Any:
        return self.types['sensor_msgs/msg/CompressedImage'](
            header=self.header(stamp, OPTICAL_FRAME), format=fmt, data=data
        )

    def static_transform(self, stamp: int, child_frame: str, position: np.ndarray, orientation: np.ndarray) -> Any:
        """A TFMessage with the one transform ``world`` -> ``child_frame`` (orientation x, y, z, w)."""
        t = self.types
        transform = t['geometry_msgs/msg/TransformStamped'](
            header=self.header(stamp, WORLD_FRAME),
            child_frame_id=child_frame,
            transform=t['geometry_msgs/msg/Transform'](
                translation=t['geometry_msgs/msg/Vector3'](*position.tolist()),
                rotation=t['geometry_msgs/msg/Quaternion'](*orientation.tolist()),
            ),
        )
        return t['tf2_msgs/msg/TFMessage'](transforms=[transform])

    def pose(self, stamp: int, position: np.ndarray, orientation: np.ndarray) -> Any:
        t = self.types
        return t['geometry_msgs/msg/PoseStamped'](
            header=self.header(stamp, WORLD_FRAME),
            pose=t['geometry_msgs/msg/Pose'](
                position=t['geometry_msgs/msg/Point'](*position.tolist()),
                orientation=t['geometry_msgs/msg/Quaternion'](*orientation.tolist()),
            ),
        )
