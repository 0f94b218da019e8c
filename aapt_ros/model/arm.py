"""The robot arm drawn at latent resolution: forward kinematics of a serial chain, then capsules
seen along each latent pixel's rays.

Our addition to AAPT. The actions (joint positions) reach the generator only as one adaLN vector
per frame, so to draw the arm the network must work out the chain's kinematics and the camera
projection itself; v8 placed it badly: the arm is 6-8 % of the pixels of our test rollouts and
40 % of their squared error at 5 s. Here both are computed: the joint positions and the arm
base's pose give each link's centre line (``ArmDrawing.points``), each link is a capsule of a
fixed radius along it, and every latent pixel gets, per link, the fraction of its area the
capsule covers, plus the inverse depth of the nearest covering link. The network still decides
what the arm looks like (colour, shading, occlusion by objects); it no longer has to find it.

The base pose comes from the robot's description (in ROS the static transform from the world
to the arm's first link); the engine hands it in the sink camera's frame, where the camera
poses of the stream are already chained (``StreamEngine``).

With ``base_plane`` (``generator.arm_base_plane``) the drawing also holds the plane the base
stands on (the base link's z = 0: the table top of a bench-mounted arm, the floor of one on the
ground) as each ray meets it. Around a fixed arm the scene is mostly fixed in the base's frame, so
where a ray meets that plane tells the network what lies there although the first frame never
showed it: the table or the ground beyond its edge, the horizon and the sky. v10 drew the surfaces
the first frame does not show 4.5 dB below each surface's own flat colour (it does not tell the
table from the ground there), and that is the largest share of its error from 5 s on.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aapt_ros.model.camera import latent_ray_directions, rays_to_plane
from aapt_ros.model.config import CameraConfig, ConfigError

SUPERSAMPLING = 4  # rays per latent pixel along each axis: coverage in steps of 1/16 of a pixel
SPHERES_PER_LINK = 6  # a capsule is drawn as this many spheres along its centre line
NEAR = 0.05  # metres: arm points nearer the camera than this are not drawn
# The base plane's channels: where the ray meets it ahead (1/0); there, x and y in the base frame
# as tanh(metres / PLANE_SCALE); 1 / distance along the ray; and everywhere the ray's up component
# in the base frame (the horizon is where it changes sign).
BASE_PLANE_CHANNELS = 5
PLANE_SCALE = 1.0  # metres: a tabletop workspace spans about this much around the base


class ArmChain(NamedTuple):
    """A serial chain of revolute joints, as its URDF gives it.

    Joint i's frame is its parent link's frame moved by ``origins[i]`` and then rotated by the
    joint position about ``axes[i]``; it is also link i + 1's frame. The drawn centre line runs
    through the base origin, every joint origin and ``tip`` (in the last link's frame).
    """

    joint_names: tuple[str, ...]
    origins: tuple[tuple[float, ...], ...]  # per joint: x, y, z, roll, pitch, yaw of the joint in its parent link
    axes: tuple[tuple[float, float, float], ...]  # per joint: unit rotation axis in the joint frame
    tip: tuple[float, float, float]  # metres: end of the last link, in its frame
    radii: tuple[float, ...]  # metres: capsule radius of each link, base link first (len(joint_names) + 1)
    # Per link (base link first) spheres x, y, z, radius in metres in the link's frame, fitted to its
    # mesh (tools/fit_arm_spheres.py), as many per link; empty: capsules of ``radii`` along the
    # centre line. A link's mesh is not centred on the segment to the next joint: the capsules
    # put a quarter of the drawn arm on the wrong link (docs/training, "Each link's colour pasted").
    spheres: tuple[tuple[tuple[float, float, float, float], ...], ...] = ()
    # Per link (base link first) the name of its visual material in the URDF; links of one material
    # look alike, so the arm paste takes a link frame 0 does not show from one of the same material
    # it does. Empty: every link its own.
    materials: tuple[str, ...] = ()

    @property
    def num_links(self) -> int:
        return len(self.joint_names) + 1


# pybullet_data's kuka_iiwa/model.urdf (the arm of our simulated recordings; tested against it).
# The radii are those of the KUKA LBR iiwa's link housings, rounded up.
KUKA_IIWA = ArmChain(
    joint_names=tuple(f'lbr_iiwa_joint_{i}' for i in range(1, 8)),
    origins=(
        (0.0, 0.0, 0.1575, 0.0, 0.0, 0.0),
        (0.0, 0.0, 0.2025, math.pi / 2, 0.0, math.pi),
        (0.0, 0.2045, 0.0, math.pi / 2, 0.0, math.pi),
        (0.0, 0.0, 0.2155, math.pi / 2, 0.0, 0.0),
        (0.0, 0.1845, 0.0, -math.pi / 2, math.pi, 0.0),
        (0.0, 0.0, 0.2155, math.pi / 2, 0.0, 0.0),
        (0.0, 0.081, 0.0, -math.pi / 2, math.pi, 0.0),
    ),
    axes=((0.0, 0.0, 1.0),) * 7,
    tip=(0.0, 0.0, 0.07),
    radii=(0.11, 0.08, 0.08, 0.075, 0.075, 0.07, 0.065, 0.05),
    materials=('Grey', 'Blue', 'Blue', 'Orange', 'Blue', 'Blue', 'Orange', 'Grey'),
)
# The same arm with each link drawn as the 16 spheres tools/fit_arm_spheres.py fitted to its visual
# mesh in pybullet_data's kuka_iiwa (--spheres 16 --margin 0.008): IoU 0.87 with pybullet's render
# of our four test episodes and the right link on 93 % of the arm (capsules: 0.78 and 74 %).
# fmt: off
KUKA_IIWA_MESHES = KUKA_IIWA._replace(
    spheres=(
        (  # link 0
            (-0.019, 0.002, 0.075, 0.081), (0.023, -0.004, 0.075, 0.081), (-0.079, 0.002, 0.063, 0.065),
            (0.005, 0.026, 0.075, 0.079), (-0.001, -0.028, 0.075, 0.077), (-0.085, 0.002, 0.105, 0.055),
            (-0.025, 0.068, 0.039, 0.045), (0.071, 0.014, 0.039, 0.044), (0.017, -0.070, 0.039, 0.044),
            (-0.031, -0.070, 0.033, 0.039), (0.029, 0.074, 0.033, 0.039), (-0.103, -0.028, 0.033, 0.039),
            (0.077, -0.034, 0.027, 0.033), (-0.025, 0.044, 0.117, 0.047), (-0.019, -0.046, 0.117, 0.047),
            (-0.103, 0.026, 0.033, 0.039),
        ),
        (  # link 1
            (0.002, -0.059, 0.155, 0.062), (-0.004, -0.029, 0.053, 0.061), (0.002, -0.059, 0.215, 0.056),
            (0.019, -0.029, 0.053, 0.060), (-0.017, 0.037, 0.029, 0.037), (-0.046, -0.035, 0.209, 0.042),
            (-0.017, -0.053, 0.113, 0.056), (0.043, -0.035, 0.221, 0.041), (-0.029, -0.023, 0.047, 0.055),
            (0.037, 0.025, 0.029, 0.037), (-0.011, -0.035, 0.251, 0.039), (0.019, -0.053, 0.149, 0.059),
            (-0.035, -0.047, 0.173, 0.049), (-0.052, 0.019, 0.023, 0.031), (0.025, -0.029, 0.251, 0.036),
            (0.043, -0.035, 0.179, 0.043),
        ),
        (  # link 2
            (0.002, 0.001, 0.061, 0.073), (0.002, 0.145, 0.031, 0.055), (-0.004, 0.061, 0.055, 0.063),
            (-0.004, -0.017, 0.061, 0.069), (-0.022, 0.151, 0.019, 0.050), (0.026, 0.157, 0.007, 0.045),
            (0.014, 0.055, 0.055, 0.063), (-0.010, 0.181, -0.041, 0.028), (-0.052, 0.013, 0.031, 0.038),
            (0.050, -0.017, 0.031, 0.039), (0.020, 0.115, 0.043, 0.049), (-0.022, 0.097, 0.049, 0.049),
            (-0.034, -0.041, 0.031, 0.039), (0.014, -0.053, 0.031, 0.039), (0.032, 0.181, -0.029, 0.029),
            (0.056, 0.025, 0.025, 0.033),
        ),
        (  # link 3
            (0.001, 0.013, 0.059, 0.066), (0.001, 0.055, 0.167, 0.059), (0.001, 0.061, 0.215, 0.059),
            (0.001, -0.017, 0.047, 0.056), (0.001, 0.043, 0.113, 0.053), (-0.023, 0.037, 0.245, 0.037),
            (0.031, 0.025, 0.245, 0.032), (-0.041, 0.025, 0.203, 0.031), (0.043, 0.025, 0.209, 0.031),
            (-0.035, 0.001, 0.035, 0.041), (0.031, -0.005, 0.035, 0.043), (0.001, 0.019, 0.263, 0.026),
            (-0.017, 0.043, 0.119, 0.047), (-0.029, -0.035, 0.023, 0.030), (0.037, 0.025, 0.185, 0.031),
            (-0.041, 0.025, 0.227, 0.031),
        ),
        (  # link 4
            (0.001, 0.013, 0.055, 0.065), (0.001, 0.127, 0.031, 0.056), (0.001, 0.061, 0.055, 0.057),
            (0.001, -0.005, 0.049, 0.061), (-0.011, 0.151, -0.029, 0.033), (0.031, 0.151, -0.011, 0.033),
            (-0.041, 0.157, 0.007, 0.031), (0.037, 0.157, 0.019, 0.032), (0.013, 0.163, -0.041, 0.029),
            (-0.029, -0.017, 0.031, 0.040), (0.031, -0.029, 0.025, 0.033), (-0.017, 0.133, 0.025, 0.050),
            (-0.029, 0.025, 0.031, 0.040), (0.031, 0.019, 0.031, 0.040), (-0.005, -0.041, 0.025, 0.034),
            (-0.035, 0.163, -0.023, 0.028),
        ),
        (  # link 5
            (-0.023, 0.013, 0.047, 0.049), (0.007, 0.031, 0.071, 0.046), (-0.023, -0.029, 0.041, 0.038),
            (0.031, -0.011, 0.059, 0.034), (0.001, 0.067, 0.119, 0.028), (0.001, 0.079, 0.173, 0.025),
            (0.043, 0.019, 0.017, 0.024), (0.031, -0.035, 0.017, 0.024), (0.001, 0.043, 0.023, 0.031),
            (0.001, 0.001, 0.011, 0.029), (0.031, 0.079, 0.203, 0.020), (-0.029, 0.079, 0.197, 0.021),
            (-0.017, 0.049, 0.089, 0.031), (0.001, 0.085, 0.215, 0.020), (-0.029, 0.073, 0.239, 0.020),
            (0.007, -0.041, 0.053, 0.028),
        ),
        (  # link 6
            (-0.003, -0.011, 0.004, 0.068), (0.003, 0.018, -0.008, 0.061), (0.003, -0.035, 0.016, 0.057),
            (-0.003, 0.025, 0.016, 0.052), (0.003, 0.001, -0.008, 0.065), (-0.015, 0.025, -0.008, 0.053),
            (0.027, 0.054, 0.022, 0.028), (-0.027, 0.067, 0.028, 0.022), (0.039, 0.067, -0.008, 0.021),
            (-0.009, 0.067, -0.038, 0.022), (-0.039, 0.067, -0.002, 0.022), (0.021, 0.067, -0.032, 0.022),
            (-0.021, -0.005, -0.020, 0.049), (0.003, 0.067, 0.040, 0.021), (0.003, -0.018, -0.008, 0.061),
            (-0.033, 0.067, -0.020, 0.022),
        ),
        (  # link 7
            (-0.001, -0.019, 0.023, 0.025), (0.005, 0.023, 0.023, 0.024), (-0.025, 0.005, 0.023, 0.023),
            (0.023, -0.007, 0.023, 0.025), (-0.019, -0.019, 0.023, 0.024), (0.023, 0.017, 0.023, 0.023),
            (-0.007, 0.005, -0.001, 0.015), (-0.013, 0.023, 0.023, 0.024), (0.005, -0.037, 0.017, 0.018),
            (0.011, -0.007, -0.001, 0.015), (0.023, -0.025, 0.017, 0.018), (0.005, 0.035, 0.017, 0.018),
            (-0.043, -0.013, 0.011, 0.013), (-0.007, -0.013, -0.001, 0.015), (0.005, 0.017, -0.001, 0.015),
            (0.041, -0.007, 0.011, 0.013),
        ),
    ),
)
# fmt: on
ARM_CHAINS = {'kuka_iiwa': KUKA_IIWA, 'kuka_iiwa_meshes': KUKA_IIWA_MESHES}


def drawing_channels(chain: ArmChain, base_plane: bool) -> int:
    """Channels of ``ArmDrawing``: per link a coverage, one inverse depth, and the base plane's."""
    return chain.num_links + 1 + (BASE_PLANE_CHANNELS if base_plane else 0)


def chain_named(name: str) -> ArmChain:
    """The chain ``generator.arm_chain`` names; ConfigError for an unknown one."""
    if name not in ARM_CHAINS:
        raise ConfigError(f'unknown generator.arm_chain {name!r}; valid: {sorted(ARM_CHAINS)} (or "" for none)')
    return ARM_CHAINS[name]


def chain_moving_like(name: str, generator_chain: str) -> ArmChain:
    """The chain ``vae.fast_decoder_arm_paste_chain`` names, drawn beside the generator's
    ``generator_chain``; ConfigError unless the generator draws an arm and both move alike (the
    same joints, origins, axes and tip): only the links' shapes may differ."""
    if not generator_chain:
        raise ConfigError(
            f'vae.fast_decoder_arm_paste_chain {name!r} needs a generator that draws the arm (generator.arm_chain)'
        )
    chain, drawn = chain_named(name), chain_named(generator_chain)
    if chain[:4] != drawn[:4]:
        raise ConfigError(
            f'vae.fast_decoder_arm_paste_chain {name!r} moves unlike generator.arm_chain {generator_chain!r}: '
            'the joints, their origins and axes and the tip must be the same, only the shapes may differ'
        )
    return chain


def chain_from_urdf(path: str | Path, tip: tuple[float, float, float], radii: tuple[float, ...]) -> ArmChain:
    """The revolute chain of a URDF file, from its root link down to the first link without a child
    joint (how a new robot's chain is written into ``ARM_CHAINS``).

    Raises:
        ConfigError: the robot branches, has a joint type other than revolute or continuous, or
            ``radii`` does not give one radius per link.
    """
    robot = ElementTree.parse(path).getroot()
    joints = robot.findall('joint')
    children = {j.find('child').get('link'): j for j in joints}  # type: ignore[union-attr]
    by_parent: dict[str, list[ElementTree.Element]] = {}
    for joint in joints:
        by_parent.setdefault(joint.find('parent').get('link'), []).append(joint)  # type: ignore[union-attr,arg-type]
    roots = [link.get('name') for link in robot.findall('link') if link.get('name') not in children]
    if len(roots) != 1:
        raise ConfigError(f'{path}: expected one root link, found {roots}')
    names, origins, axes = [], [], []
    link = roots[0]
    links = [link]
    while link in by_parent:
        if len(by_parent[link]) > 1:
            raise ConfigError(f'{path}: link {link} has {len(by_parent[link])} child joints; only serial chains')
        joint = by_parent[link][0]
        if joint.get('type') not in ('revolute', 'continuous'):
            raise ConfigError(f'{path}: joint {joint.get("name")} is {joint.get("type")}; only revolute joints')
        origin, axis = joint.find('origin'), joint.find('axis')
        xyz = [float(v) for v in (origin.get('xyz', '0 0 0') if origin is not None else '0 0 0').split()]
        rpy = [float(v) for v in (origin.get('rpy', '0 0 0') if origin is not None else '0 0 0').split()]
        names.append(str(joint.get('name')))
        origins.append(tuple(xyz + rpy))
        direction = np.array([float(v) for v in (axis.get('xyz', '1 0 0') if axis is not None else '1 0 0').split()])
        axes.append(tuple((direction / np.linalg.norm(direction)).tolist()))
        link = str(joint.find('child').get('link'))  # type: ignore[union-attr]
        links.append(link)
    if len(radii) != len(names) + 1:
        raise ConfigError(f'{path}: {len(names) + 1} links need as many radii, got {len(radii)}')
    materials = []
    for name in links:
        material = robot.find(f"link[@name='{name}']/visual/material")
        materials.append(material.get('name', '') if material is not None else '')
    return ArmChain(tuple(names), tuple(origins), tuple(axes), tip, tuple(radii), materials=tuple(materials))


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll), float64 (3, 3)."""
    cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_rotations(axes: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit axes (J, 3) and angles (B, J) -> rotations (B, J, 3, 3)."""
    k = axes[None].expand(*angles.shape, 3)  # (B, J, 3)
    zero = torch.zeros_like(k[..., 0])
    cross = torch.stack(
        [
            torch.stack([zero, -k[..., 2], k[..., 1]], -1),
            torch.stack([k[..., 2], zero, -k[..., 0]], -1),
            torch.stack([-k[..., 1], k[..., 0], zero], -1),
        ],
        -2,
    )  # (B, J, 3, 3), cross[..] @ v = k x v
    s, c = angles.sin()[..., None, None], angles.cos()[..., None, None]
    eye = torch.eye(3, dtype=angles.dtype, device=angles.device)
    return eye + s * cross + (1 - c) * cross @ cross


class ArmDrawing(nn.Module):
    """Joint positions, the arm base and the camera -> (B, L + 1, h, w): per link (base link first)
    the fraction of each latent pixel its capsule covers, then the mean over the pixel of
    1 / depth (metres along the ray) of the nearest covering link, 0 where none does; with
    ``base_plane`` BASE_PLANE_CHANNELS more, the base's plane as the rays meet it. ``image``
    gives the same drawing at its SUPERSAMPLING x finer samples, for the light decoder (an arm
    16 image pixels per latent pixel coarse is drawn blurred however well it is placed).

    Computed in float32 whatever the module's dtype (the buffers are cast where used), as
    ``RayEncoder`` does."""

    joint_origins: torch.Tensor  # (J, 4, 4) each joint in its parent link's frame
    joint_axes: torch.Tensor  # (J, 3)
    tip: torch.Tensor  # (3,)
    radii: torch.Tensor  # (L,) L = J + 1 links
    link_spheres: torch.Tensor | None  # (L, K, 4) with the chain's spheres: x, y, z, radius in each link's frame
    same_material: torch.Tensor  # (L, L) bool
    sample_directions: torch.Tensor  # (3, S) unit rays of the S = h s w s samples, camera frame, image order

    def __init__(
        self, camera: CameraConfig, latent_height: int, latent_width: int, chain: ArmChain, base_plane: bool = False
    ):
        super().__init__()
        self.chain = chain
        self.base_plane = base_plane
        self.latent_height, self.latent_width = latent_height, latent_width
        self.num_channels = drawing_channels(chain, base_plane)
        origins = np.tile(np.eye(4), (len(chain.joint_names), 1, 1))
        for i, (x, y, z, roll, pitch, yaw) in enumerate(chain.origins):
            origins[i, :3, :3], origins[i, :3, 3] = rpy_matrix(roll, pitch, yaw), (x, y, z)
        self.register_buffer('joint_origins', torch.tensor(origins, dtype=torch.float32), persistent=False)
        self.register_buffer('joint_axes', torch.tensor(chain.axes, dtype=torch.float32), persistent=False)
        self.register_buffer('tip', torch.tensor(chain.tip, dtype=torch.float32), persistent=False)
        self.register_buffer('radii', torch.tensor(chain.radii, dtype=torch.float32), persistent=False)
        spheres = torch.tensor(chain.spheres, dtype=torch.float32) if chain.spheres else None
        self.register_buffer('link_spheres', spheres, persistent=False)
        # (L, L) bool: whether two links are of one material (each link is of its own).
        names = chain.materials or tuple(str(i) for i in range(chain.num_links))
        same = torch.tensor([[a == b for b in names] for a in names])
        self.register_buffer('same_material', same, persistent=False)
        # The rays of an s x s grid of samples in every latent pixel: the latent grid of an image
        # s times finer, whose cells' centres latent_ray_directions gives, in image order.
        self.sample_size = (latent_height * SUPERSAMPLING, latent_width * SUPERSAMPLING)  # the drawing's h s, w s
        fine = latent_ray_directions(camera, *self.sample_size)
        self.register_buffer('sample_directions', fine.flatten(1).float(), persistent=False)  # (3, h s w s)

    def link_poses(self, joints: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """joints (B, J) radians, base (B, 3, 4) the base link's pose [R | t] in some frame
        -> (B, L, 4, 4) float32 each link's pose in that frame, the base link first."""
        bottom = torch.zeros_like(base[:, :1]).float()  # (B, 1, 4): [0 0 0 1], made on the device (CUDA graphs)
        bottom[..., 3] = 1.0
        pose = torch.cat([base.float(), bottom], 1)
        spins = torch.zeros(*joints.shape, 4, 4, dtype=torch.float32, device=joints.device)
        spins[..., :3, :3] = axis_rotations(self.joint_axes.float(), joints.float())
        spins[..., 3, 3] = 1.0
        poses = [pose]
        for i in range(joints.shape[1]):
            pose = pose @ self.joint_origins[i].float() @ spins[:, i]
            poses.append(pose)
        return torch.stack(poses, 1)

    def points(self, joints: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """joints (B, J) radians, base (B, 3, 4) the base link's pose [R | t] in some frame
        -> (B, J + 2, 3) the centre line's points in that frame: base origin, joint origins, tip."""
        poses = self.link_poses(joints, base)  # a joint's origin is its link's: the spin does not move it
        tip = poses[:, -1, :3, 3] + torch.einsum('bij,j->bi', poses[:, -1, :3, :3], self.tip.float())
        return torch.cat([poses[:, :, :3, 3], tip[:, None]], 1)

    def transfer(
        self, joints: torch.Tensor, base: torch.Tensor, other_joints: torch.Tensor, other_base: torch.Tensor
    ) -> torch.Tensor:
        """The arm at joints (B, J) with its base at base (B, 3, 4) in one camera, and at other_joints
        with other_base in another -> (B, L, 3, 4) per link [R | t], taking a point on that link in
        the first camera's frame to where the same point of the link is in the other's."""
        here, there = self.link_poses(joints, base), self.link_poses(other_joints, other_base)
        rotation = here[..., :3, :3].transpose(-1, -2)  # a rigid pose's inverse: [R^T | -R^T t]
        inverse = torch.cat([torch.cat([rotation, -rotation @ here[..., :3, 3:]], -1), here[..., 3:, :]], -2)
        return (there @ inverse)[..., :3, :]

    def spheres(self, joints: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """joints (B, J) radians, base (B, 3, 4) the base link's pose in some frame -> the spheres the
        links are drawn as: centres float32 (B, L, K, 3) in that frame and radii (L, K) in metres; the
        chain's fitted spheres, or SPHERES_PER_LINK along each link's segment of the centre line."""
        if self.link_spheres is None:
            points = self.points(joints, base)  # (B, L + 1, 3)
            a, b = points[:, :-1], points[:, 1:]  # (B, L, 3) each link's ends
            u = torch.linspace(0, 1, SPHERES_PER_LINK, device=points.device)
            centres = a[:, :, None] + u[None, None, :, None] * (b - a)[:, :, None]  # (B, L, K, 3)
            return centres, self.radii.float()[:, None].expand(-1, SPHERES_PER_LINK)
        poses = self.link_poses(joints, base)  # (B, L, 4, 4)
        spheres = self.link_spheres.float()
        centres = torch.einsum('blij,lkj->blki', poses[..., :3, :3], spheres[..., :3]) + poses[:, :, None, :3, 3]
        return centres, spheres[..., 3]

    def image(self, joints: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """joints (B, J) radians; base (B, 3, 4): the base link in the *current camera's* frame
        -> float32 (B, L + 1, h s, w s), the drawing at the samples: per link 1 where its shape
        covers the sample's ray, then 1 / depth of the nearest covering link (0: none), then the
        base plane's channels (``base_plane``)."""
        return self.image_and_links(joints, base)[0]

    def image_and_links(self, joints: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image``, and (B, h s, w s) long the nearest covering link at each sample (-1: none)."""
        centres, radii = self.spheres(joints, base)  # (B, L, K, 3) camera frame, (L, K)
        along = torch.einsum('blkc,cs->blks', centres, self.sample_directions.float())  # (B, L, K, S) depth on each ray
        squared = (centres * centres).sum(-1)[..., None] - along * along  # squared distance to the ray
        hit = (along > NEAR) & (squared < radii[None, :, :, None] ** 2)
        covered = hit.any(2)  # (B, L, S)
        per_link = torch.where(hit, along, torch.full_like(along, math.inf)).amin(dim=2)  # (B, L, S)
        depth, nearest = per_link.min(dim=1)  # (B, S) the nearest link's
        inverse_depth = torch.where(depth.isfinite(), 1 / depth, torch.zeros_like(depth))
        nearest = torch.where(depth.isfinite(), nearest, torch.full_like(nearest, -1))
        parts = [covered.float(), inverse_depth[:, None]]  # (B, L, S), (B, 1, S)
        if self.base_plane:
            parts.append(self.plane(base))
        drawn = torch.cat(parts, 1)  # (B, L + 1 [+ BASE_PLANE_CHANNELS], S)
        return drawn.unflatten(2, self.sample_size), nearest.unflatten(1, self.sample_size)  # type: ignore[no-untyped-call]

    def fine_links(self, joints: torch.Tensor, base: torch.Tensor, factor: int) -> torch.Tensor:
        """The nearest covering link at ``factor`` x finer samples (B, h s f, w s f), long (-1: none):
        each link's distance field from its spheres (squared distance of the ray to a centre over
        the radius squared, minus 1: negative inside), computed at the samples and interpolated
        bilinearly, so the silhouette is drawn finer than the samples for about their cost."""
        centres, radii = self.spheres(joints, base)  # (B, L, K, 3), (L, K)
        along = torch.einsum('blkc,cs->blks', centres, self.sample_directions.float())  # (B, L, K, S)
        squared = (centres * centres).sum(-1)[..., None] - along * along
        inside = (squared / radii[None, :, :, None] ** 2 - 1).clamp(-1, 1)
        inside = torch.where(along > NEAR, inside, torch.ones_like(inside))
        field, nearest = inside.min(dim=2)  # (B, L, S): each link's, and its sphere that is deepest there
        depth = torch.gather(along, 2, nearest[:, :, None]).squeeze(2)  # (B, L, S): which link is in front
        size = self.sample_size
        fine = (size[0] * factor, size[1] * factor)
        field = F.interpolate(field.view(*field.shape[:2], *size), size=fine, mode='bilinear', align_corners=False)
        depth = F.interpolate(depth.view(*depth.shape[:2], *size), size=fine, mode='nearest')
        depth = torch.where(field < 0, depth, torch.full_like(depth, math.inf))  # (B, L, h s f, w s f)
        nearest_depth, link = depth.min(dim=1)
        return torch.where(nearest_depth.isfinite(), link, torch.full_like(link, -1))

    def plane(self, base: torch.Tensor) -> torch.Tensor:
        """base (B, 3, 4): the base link in the current camera's frame -> (B, BASE_PLANE_CHANNELS, S)
        at the samples: the rays against the base's z = 0 plane (channels: see BASE_PLANE_CHANNELS)."""
        origin, directions, distance = rays_to_plane(base, self.sample_directions)  # (B, 3), (B, 3, S), (B, S)
        up = directions[:, 2]
        meets = distance > 0
        hit = origin[:, :2, None] + distance[:, None] * directions[:, :2]  # (B, 2, S)
        inverse = torch.where(meets, 1 / distance.clamp(min=NEAR), torch.zeros_like(distance))
        on = meets.float()
        return torch.cat([on[:, None], torch.tanh(hit / PLANE_SCALE) * on[:, None], inverse[:, None], up[:, None]], 1)

    def forward(self, joints: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """joints (B, J) radians; base (B, 3, 4): the base link in the *current camera's* frame
        -> float32 (B, L + 1, h, w), ``image`` averaged over each latent pixel's samples."""
        return F.avg_pool2d(self.image(joints, base), SUPERSAMPLING)
