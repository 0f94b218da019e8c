"""A randomised tabletop robot scene rendered on the CPU with pybullet (DIRECT mode, TinyRenderer).

Used by ``aapt-record-sim`` (``sim_recorder.py``) to make training and evaluation recordings.
Everything random is drawn from a numpy Generator, and pybullet in DIRECT mode is deterministic,
so a seed fixes the scene and its images.

Camera convention: poses are those of the camera's *optical* frame (REP 103: z forward, x right,
y down) in ``world``; pybullet wants an OpenGL view matrix (camera looks along -z, y up), so
``view_matrix`` flips the y and z axes. ``Intrinsics`` follow OpenCV/ROS: the centre of pixel
(u, v) is at integer coordinates. TinyRenderer samples pixels at integer window coordinates (not
OpenGL's +0.5) and writes window row y to image row H - 1 - y, so ``projection_matrix`` uses cx
as is and cy + 1: a world point X then renders where ``K @ X`` says (pinned by a test to a
fraction of a pixel). The hardware OpenGL renderer would need other offsets; it is not used.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

try:  # pybullet is an optional dependency: only the simulated recordings need it
    import pybullet as p  # type: ignore[import-not-found,unused-ignore]
    import pybullet_data  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError as err:
    raise ImportError(f'simulated recordings need pybullet (pip install pybullet): {err}') from None

from aapt_ros.model.config import KUKA_IIWA_JOINTS

PHYSICS_HZ = 240.0  # pybullet's default time step; frames get round(PHYSICS_HZ / rate) steps each
TABLE_TOP_Z = 0.625  # table/table.urdf: a 0.05 m thick top centred at 0.6 m
TABLE_HALF_EXTENTS = (0.75, 0.5)  # the top is 1.5 m x 1.0 m, centred on the world origin
# table/table.urdf's visuals as boxes (x, y, z, half x, half y, half z) in the world: the top, then
# four 0.1 m square legs 0.58 m tall; a light decoder may be told them (vae.fast_decoder_static_boxes).
TABLE_BOXES = (
    (0.0, 0.0, 0.6, *TABLE_HALF_EXTENTS, 0.025),
    *((x, y, 0.29, 0.05, 0.05, 0.29) for x in (-0.65, 0.65) for y in (-0.4, 0.4)),
)
WORKSPACE_CENTER = np.array([0.05, 0.0, TABLE_TOP_Z + 0.25])  # where cameras look: objects and arm
ARM_URDF = 'kuka_iiwa/model.urdf'
ARM_BASE_FRAME = 'lbr_iiwa_link_0'  # the root link of ARM_URDF: the frame the arm's forward kinematics start from
TRAY_URDF = 'tray/traybox.urdf'
# Small objects from pybullet_data with the range of their random scale; each scene draws a subset.
OBJECTS = {
    'cube_small.urdf': (1.0, 2.5),
    'duck_vhacd.urdf': (0.8, 1.4),
    'teddy_vhacd.urdf': (0.8, 1.4),
    'lego/lego.urdf': (1.5, 3.0),
    'objects/mug.urdf': (0.8, 1.2),
    'jenga/jenga.urdf': (0.8, 1.5),
    'sphere_small.urdf': (1.0, 2.0),
}
OBJECT_REGION = ((-0.1, 0.6), (-0.38, 0.38))  # x and y ranges on the table in front of the arm
MAX_OBJECTS = 5
SETTLE_SECONDS = 1.0  # physics before the first frame (dropped objects come to rest); its sim time is 1 s


class Intrinsics(NamedTuple):
    """Pinhole intrinsics in the OpenCV/ROS convention (pixel centres at integer coordinates)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float) -> Intrinsics:
        """Square pixels (fx = fy) from a horizontal field of view; principal point at (W/2, H/2)."""
        f = width / 2 / math.tan(math.radians(horizontal_fov_deg) / 2)
        return cls(width, height, f, f, width / 2, height / 2)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def quaternion_to_rotation(quaternion: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def view_matrix(position: np.ndarray, quaternion: np.ndarray) -> list[float]:
    """pybullet view matrix (16 floats, column-major) of an optical frame at ``position``.

    The optical frame's axes (x right, y down, z forward) become OpenGL's (x right, y up, z back)
    by negating y and z; the view matrix is the inverse of that camera-to-world transform.
    """
    r_gl = quaternion_to_rotation(quaternion) @ np.diag([1.0, -1.0, -1.0])  # columns: GL camera axes in world
    view = np.eye(4)
    view[:3, :3] = r_gl.T
    view[:3, 3] = -r_gl.T @ np.asarray(position, dtype=np.float64)
    return view.flatten(order='F').tolist()


NEAR, FAR = 0.01, 10.0  # clipping planes of the rendered camera (metres)


def projection_matrix(k: Intrinsics, near: float = NEAR, far: float = FAR) -> list[float]:
    """TinyRenderer projection matrix (16 floats, column-major) that reproduces the pinhole ``k``.

    Image column u = window x and image row v = H - 1 - window y (TinyRenderer samples at integer
    window coordinates), hence ``cx`` for x but ``cy + 1`` for y; the offsets have opposite signs
    because image rows go down while OpenGL's y goes up.
    """
    w, h = k.width, k.height
    proj = np.array(
        [
            [2 * k.fx / w, 0.0, 1 - 2 * k.cx / w, 0.0],
            [0.0, 2 * k.fy / h, 2 * (k.cy + 1) / h - 1, 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )
    return proj.flatten(order='F').tolist()


@dataclass(frozen=True)
class Lighting:
    """TinyRenderer light, drawn per scene."""

    direction: tuple[float, float, float]  # towards the light, world frame
    ambient: float
    diffuse: float
    specular: float
    shadow: bool


@dataclass(frozen=True)
class Scene:
    client: int  # pybullet physics client id
    arm: int  # body id of the KUKA iiwa
    joint_indices: tuple[int, ...]  # pybullet joint indices in KUKA_IIWA_JOINTS order
    max_forces: tuple[float, ...]  # joint effort limits from the URDF (N m)
    lighting: Lighting
    surfaces: tuple[int, ...] = ()  # body ids of the ground and the table: large surfaces whose look repeats

    def command(self, positions: np.ndarray) -> None:
        """Send joint position targets (rad), in KUKA_IIWA_JOINTS order, to the position controllers."""
        p.setJointMotorControlArray(
            self.arm,
            self.joint_indices,
            p.POSITION_CONTROL,
            targetPositions=positions.tolist(),
            forces=self.max_forces,
            physicsClientId=self.client,
        )

    def step(self, steps: int) -> None:
        for _ in range(steps):
            p.stepSimulation(physicsClientId=self.client)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured joint positions (rad) and velocities (rad/s), each (7,) float64."""
        states = p.getJointStates(self.arm, self.joint_indices, physicsClientId=self.client)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def arm_base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Position (3,) and unit quaternion x, y, z, w (4,), float64, of the arm's URDF root link
        (``ARM_BASE_FRAME``) in ``world``.

        pybullet's base pose is that of the root link's *inertial* frame (for the iiwa 0.1 m back and
        0.07 m up from the link frame), so the link frame is that pose times the inverse of the
        link's local inertial frame. Only queries pybullet: draws nothing, changes nothing.
        """
        com_position, com_orientation = p.getBasePositionAndOrientation(self.arm, physicsClientId=self.client)
        inertial_position, inertial_orientation = p.getDynamicsInfo(self.arm, -1, physicsClientId=self.client)[3:5]
        position, orientation = p.multiplyTransforms(
            com_position, com_orientation, *p.invertTransform(inertial_position, inertial_orientation)
        )
        quaternion = np.asarray(orientation, dtype=np.float64)
        return np.asarray(position, dtype=np.float64), quaternion / np.linalg.norm(quaternion)

    def render(self, k: Intrinsics, position: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
        """RGB image (H, W, 3) uint8 seen by the optical frame at ``position``/``quaternion``."""
        _, _, rgba, _, _ = self._camera_image(k, position, quaternion, p.ER_NO_SEGMENTATION_MASK)
        return np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(k.height, k.width, 4)[..., :3])

    def render_geometry(
        self, k: Intrinsics, position: np.ndarray, quaternion: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``render``'s image plus the depth along the optical axis (H, W) in metres (``FAR`` where
        nothing is drawn) and the body id drawn at each pixel (H, W) int (-1 where none; compare with
        ``arm`` and ``surfaces``)."""
        _, _, rgba, buffer, segmentation = self._camera_image(k, position, quaternion, 0)
        rgb = np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(k.height, k.width, 4)[..., :3])
        depth_buffer = np.asarray(buffer, dtype=np.float64).reshape(k.height, k.width)
        depth = FAR * NEAR / (FAR - (FAR - NEAR) * depth_buffer)  # OpenGL depth buffer -> metres
        return rgb, depth, np.asarray(segmentation, dtype=np.int64).reshape(k.height, k.width)

    def _camera_image(self, k: Intrinsics, position: np.ndarray, quaternion: np.ndarray, flags: int) -> Any:
        light = self.lighting
        return p.getCameraImage(
            k.width,
            k.height,
            view_matrix(position, quaternion),
            projection_matrix(k),
            renderer=p.ER_TINY_RENDERER,
            flags=flags,
            shadow=int(light.shadow),
            lightDirection=light.direction,
            lightAmbientCoeff=light.ambient,
            lightDiffuseCoeff=light.diffuse,
            lightSpecularCoeff=light.specular,
            physicsClientId=self.client,
        )


@contextmanager
def bullet_client() -> Iterator[int]:
    """A private headless pybullet client (one per episode, so no state leaks between episodes)."""
    client = p.connect(p.DIRECT)
    try:
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
        yield client
    finally:
        p.disconnect(physicsClientId=client)


def random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 0.9)) -> list[float]:
    """RGBA with a uniform hue, the given saturation range and a mid-to-high value."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(0.45, 1.0) * 255]]])
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return [*rgb.tolist(), 1.0]


def checker_texture(rng: np.random.Generator, folder: Path) -> Path:
    """A 256x256 two-colour checkerboard PNG. plane.urdf repeats its texture every 2 m; 2..6 squares
    per repeat keep squares >= 0.33 m, which TinyRenderer's nearest-texel sampling shows without
    flickering at 160x120."""
    squares = int(rng.integers(2, 7))
    index = np.arange(256) * squares // 256
    cells = np.add.outer(index, index) % 2  # (256, 256) of 0/1
    colors = np.array([random_color(rng)[:3], random_color(rng)[:3]]) * 255
    path = folder / 'ground.png'
    cv2.imwrite(str(path), colors[cells].astype(np.uint8)[..., ::-1])  # RGB -> BGR for OpenCV
    return path


def _load(client: int, urdf: str, position: list[float], yaw: float = 0.0, **kwargs: Any) -> int:
    orientation = p.getQuaternionFromEuler([0.0, 0.0, yaw])
    body: int = p.loadURDF(urdf, position, orientation, physicsClientId=client, **kwargs)
    return body


def _place_objects(client: int, rng: np.random.Generator) -> None:
    """A tray (half the scenes) and 1..MAX_OBJECTS small objects, kept apart, tinted at random."""
    (x0, x1), (y0, y1) = OBJECT_REGION
    placed: list[tuple[float, float, float]] = []  # x, y, keep-out radius

    def free_spot(radius: float) -> tuple[float, float] | None:
        for _ in range(20):
            x, y = rng.uniform(x0 + radius, x1 - radius), rng.uniform(y0 + radius, y1 - radius)
            if all(math.hypot(x - a, y - b) > radius + r for a, b, r in placed):
                return x, y
        return None

    if rng.random() < 0.5:
        scale = rng.uniform(0.45, 0.6)  # traybox is 0.6 m wide at scale 1
        spot = free_spot(0.3 * scale)
        if spot is not None:
            tray = _load(client, TRAY_URDF, [*spot, TABLE_TOP_Z + 0.01], rng.uniform(0, math.pi), globalScaling=scale)
            p.changeVisualShape(tray, -1, rgbaColor=random_color(rng), physicsClientId=client)
            placed.append((*spot, 0.3 * scale))
    names = sorted(OBJECTS)
    for index in rng.choice(len(names), size=int(rng.integers(1, MAX_OBJECTS + 1)), replace=True):
        low, high = OBJECTS[names[index]]
        scale = rng.uniform(low, high)
        spot = free_spot(0.06 * scale)
        if spot is None:
            continue
        body = _load(
            client, names[index], [*spot, TABLE_TOP_Z + 0.08 * scale], rng.uniform(0, 2 * math.pi), globalScaling=scale
        )
        p.changeVisualShape(body, -1, rgbaColor=random_color(rng), physicsClientId=client)
        placed.append((*spot, 0.06 * scale))


def build_scene(
    client: int, rng: np.random.Generator, initial_joints: np.ndarray, *, rate_hz: float, shadows: bool = True
) -> Scene:
    """Ground, table, KUKA iiwa and objects, randomised by ``rng``; the arm starts at ``initial_joints``
    and the physics has settled for SETTLE_SECONDS with the arm held there."""
    steps_per_frame = max(1, round(PHYSICS_HZ / rate_hz))
    p.setPhysicsEngineParameter(fixedTimeStep=1.0 / (rate_hz * steps_per_frame), physicsClientId=client)
    p.setGravity(0.0, 0.0, -9.81, physicsClientId=client)

    ground = _load(client, 'plane.urdf', [0.0, 0.0, 0.0])
    style = rng.integers(3)  # 0: pybullet's checker tinted, 1: plain colour, 2: a generated checkerboard
    texture = -1
    if style == 2:
        with tempfile.TemporaryDirectory(prefix='aapt_sim_') as folder:
            texture = p.loadTexture(str(checker_texture(rng, Path(folder))), physicsClientId=client)
    kwargs = {} if style == 0 else {'textureUniqueId': texture}
    color = random_color(rng, (0.0, 0.4)) if style != 2 else [1.0, 1.0, 1.0, 1.0]
    p.changeVisualShape(ground, -1, rgbaColor=color, physicsClientId=client, **kwargs)

    table = _load(client, 'table/table.urdf', [0.0, 0.0, 0.0], useFixedBase=True)
    p.changeVisualShape(table, -1, rgbaColor=random_color(rng, (0.0, 0.6)), physicsClientId=client)

    arm_xy = [rng.uniform(-0.45, -0.3), rng.uniform(-0.15, 0.15)]
    arm = _load(client, ARM_URDF, [*arm_xy, TABLE_TOP_Z], rng.uniform(-0.5, 0.5), useFixedBase=True)
    by_name = {
        p.getJointInfo(arm, j, physicsClientId=client)[1].decode(): j
        for j in range(p.getNumJoints(arm, physicsClientId=client))
    }
    assert tuple(by_name) == KUKA_IIWA_JOINTS, f'{ARM_URDF} joints {tuple(by_name)} != {KUKA_IIWA_JOINTS}'
    base_link = p.getBodyInfo(arm, physicsClientId=client)[0].decode()
    assert base_link == ARM_BASE_FRAME, f'{ARM_URDF} root link {base_link!r} != {ARM_BASE_FRAME!r}'
    joint_indices = tuple(by_name[name] for name in KUKA_IIWA_JOINTS)
    max_forces = tuple(float(p.getJointInfo(arm, j, physicsClientId=client)[10]) for j in joint_indices)
    for j, q in zip(joint_indices, initial_joints.tolist(), strict=True):
        p.resetJointState(arm, j, q, physicsClientId=client)

    _place_objects(client, rng)
    elevation, azimuth = rng.uniform(0.5, 1.3), rng.uniform(0, 2 * math.pi)
    lighting = Lighting(
        direction=(
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ),
        ambient=rng.uniform(0.5, 0.7),
        diffuse=rng.uniform(0.3, 0.5),
        specular=rng.uniform(0.0, 0.2),
        shadow=shadows,
    )
    scene = Scene(client, arm, joint_indices, max_forces, lighting, surfaces=(ground, table))
    scene.command(initial_joints)
    scene.step(round(SETTLE_SECONDS * rate_hz * steps_per_frame))
    return scene
