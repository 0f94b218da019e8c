"""The arm drawing: kinematics and coverage checked against pybullet, the renderer of our recordings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aapt_ros.model.arm import BASE_PLANE_CHANNELS, KUKA_IIWA, NEAR, PLANE_SCALE, ArmDrawing, chain_from_urdf
from aapt_ros.model.config import CameraConfig, ConfigError, GeneratorConfig
from tests.conftest import tiny_config

p = pytest.importorskip('pybullet')
pybullet_data = pytest.importorskip('pybullet_data')
sim_scene = pytest.importorskip('aapt_ros.data.sim_scene')

URDF = f'{pybullet_data.getDataPath()}/kuka_iiwa/model.urdf'


def base_matrix(position: tuple[float, ...], quaternion: tuple[float, ...]) -> torch.Tensor:
    rotation = np.array(p.getMatrixFromQuaternion(quaternion)).reshape(3, 3)
    return torch.tensor(np.concatenate([rotation, np.array(position)[:, None]], axis=1), dtype=torch.float32)[None]


def test_the_built_in_chain_is_the_urdf_of_the_recordings() -> None:
    chain = chain_from_urdf(URDF, KUKA_IIWA.tip, KUKA_IIWA.radii)
    assert chain.joint_names == KUKA_IIWA.joint_names
    assert chain.materials == KUKA_IIWA.materials  # the links' visual materials, base link first
    assert chain.axes == KUKA_IIWA.axes
    np.testing.assert_allclose(chain.origins, KUKA_IIWA.origins, atol=1e-9)
    with pytest.raises(ConfigError, match='8 links need as many radii'):
        chain_from_urdf(URDF, KUKA_IIWA.tip, (0.1,))


def test_forward_kinematics_puts_every_joint_where_pybullet_does() -> None:
    drawing = ArmDrawing(CameraConfig(), 16, 16, KUKA_IIWA)
    client = p.connect(p.DIRECT)
    try:
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=client)
        position, quaternion = (-0.4, 0.1, 0.625), p.getQuaternionFromEuler([0.1, -0.2, 0.3])
        arm = p.loadURDF('kuka_iiwa/model.urdf', position, quaternion, useFixedBase=True, physicsClientId=client)
        joints = np.random.default_rng(0).uniform(-2, 2, 7)
        for j, q in enumerate(joints):
            p.resetJointState(arm, j, q, physicsClientId=client)
        expected = [p.getLinkState(arm, j, computeForwardKinematics=True, physicsClientId=client)[4] for j in range(7)]
    finally:
        p.disconnect(client)
    points = drawing.points(torch.tensor(joints)[None], base_matrix(position, quaternion))[0]  # (9, 3)
    np.testing.assert_allclose(points[0].numpy(), position, atol=1e-6)
    np.testing.assert_allclose(points[1:8].numpy(), np.array(expected), atol=1e-5)


def look_at(eye: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optical frame (z forward, x right, y down) at ``eye`` looking at ``target``: R (3, 3), quaternion xyzw."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    rotation = np.stack([x, np.cross(z, x), z], axis=1)
    w = math.sqrt(1 + np.trace(rotation)) / 2
    quaternion = np.array(
        [
            (rotation[2, 1] - rotation[1, 2]) / (4 * w),
            (rotation[0, 2] - rotation[2, 0]) / (4 * w),
            (rotation[1, 0] - rotation[0, 1]) / (4 * w),
            w,
        ]
    )
    return rotation, quaternion


def test_the_drawn_arm_covers_the_pixels_pybullet_renders_it_in() -> None:
    k = sim_scene.Intrinsics.from_fov(128, 128, 60.0)
    drawing = ArmDrawing(CameraConfig(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy), 16, 16, KUKA_IIWA)
    ious = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        with sim_scene.bullet_client() as client:
            scene = sim_scene.build_scene(client, rng, rng.uniform(-1.2, 1.2, 7), rate_hz=15.0)
            # pybullet reports the base's centre of mass; the link frame is where it was loaded.
            com, com_quaternion = p.getBasePositionAndOrientation(scene.arm, physicsClientId=client)
            inertial = p.getDynamicsInfo(scene.arm, -1, physicsClientId=client)[3:5]
            position, quaternion = p.multiplyTransforms(com, com_quaternion, *p.invertTransform(*inertial))
            joints, _ = scene.joint_state()
            azimuth = rng.uniform(0, 2 * math.pi)
            eye = sim_scene.WORKSPACE_CENTER + 1.6 * np.array(
                [math.cos(0.5) * math.cos(azimuth), math.cos(0.5) * math.sin(azimuth), math.sin(0.5)]
            )
            rotation, camera_quaternion = look_at(eye, sim_scene.WORKSPACE_CENTER)
            _, _, bodies = scene.render_geometry(k, eye, camera_quaternion)
        rendered = (bodies == scene.arm).reshape(16, 8, 16, 8).mean(axis=(1, 3)) > 0.5
        base = base_matrix(position, quaternion)[0].double().numpy()
        in_camera = np.concatenate([rotation.T @ base[:, :3], rotation.T @ (base[:, 3:] - eye[:, None])], axis=1)
        channels = drawing(torch.tensor(joints)[None], torch.tensor(in_camera)[None])[0]  # (9, 16, 16)
        assert channels.shape == (KUKA_IIWA.num_links + 1, 16, 16)
        drawn = channels[:-1].sum(0).numpy() > 0.5
        ious.append((rendered & drawn).sum() / (rendered | drawn).sum())
        assert 0.3 < channels[-1].max() < 2.0  # 1 / depth of an arm 0.5-2 m away (within a pixel's mean)
    assert min(ious) > 0.5, ious  # capsules, not meshes: the housings bulge, the wrist is thin


def test_an_arm_behind_the_camera_is_not_drawn() -> None:
    drawing = ArmDrawing(CameraConfig(), 16, 16, KUKA_IIWA)
    joints = torch.zeros(1, 7)  # straight up along the base's z
    in_front = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.3], [0, 1, 0, 1.5]]])  # base 1.5 m ahead, arm up (-y)
    behind = in_front.clone()
    behind[0, 2, 3] = -NEAR - 1.5
    assert drawing(joints, in_front)[0, :-1].sum() > 5
    assert drawing(joints, behind).abs().sum() == 0


def test_the_fine_drawing_is_what_each_latent_pixel_averages() -> None:
    """``image`` (for the light decoder) at 4 x the latent resolution, ``forward`` its mean per pixel."""
    drawing = ArmDrawing(CameraConfig(), 16, 16, KUKA_IIWA)
    joints = torch.tensor([[0.3, 0.5, -0.2, -1.0, 0.1, 0.6, 0.0]])
    base = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.3], [0, 1, 0, 1.5]]])  # base 1.5 m ahead, arm up (-y)
    fine = drawing.image(joints, base)
    assert fine.shape == (1, KUKA_IIWA.num_links + 1, 64, 64)
    covered = fine[:, :-1]
    assert covered.sum() > 50 and ((covered == 0) | (covered == 1)).all()  # each sample is on a link or not
    depth = fine[0, -1][covered[0].any(0)]
    assert (1 / depth).min() > 1.0 and (1 / depth).max() < 2.6  # the arm's links, 1.5 m away give or take a metre
    torch.testing.assert_close(drawing(joints, base), torch.nn.functional.avg_pool2d(fine, 4))


def test_an_unknown_base_draws_nothing_and_the_config_is_checked() -> None:
    from aapt_ros.model.generator import CausalGenerator

    net = CausalGenerator(tiny_config(sink_ray_origin_scale=1.0, arm_chain='kuka_iiwa'))
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    rays = net.conditioning(eye, zero, eye, zero, action=torch.zeros(1, 7), arm_base=torch.zeros(1, 3, 4))
    assert rays.shape[1] == 12 + KUKA_IIWA.num_links + 1 and rays[:, 12:].abs().sum() == 0
    with pytest.raises(ValueError, match='pass action and arm_base'):
        net.conditioning(eye, zero, eye, zero)
    with pytest.raises(ConfigError, match=r'unknown generator\.arm_chain'):
        GeneratorConfig(sink_ray_origin_scale=1.0, arm_chain='ur5')
    with pytest.raises(ConfigError, match='needs sink rays'):
        GeneratorConfig(arm_chain='kuka_iiwa')
    with pytest.raises(ConfigError, match=r'needs the joint positions \[.lbr_iiwa_joint_7.\]'):
        GeneratorConfig(sink_ray_origin_scale=1.0, arm_chain='kuka_iiwa', action_names=KUKA_IIWA.joint_names[:6])


def test_the_base_plane_is_where_pybullet_renders_the_table_top() -> None:
    """Where the rendered image shows the table top (the plane the arm's base stands on), the plane
    channels say the ray meets it, at the rendered distance and within the table's extent."""
    k = sim_scene.Intrinsics.from_fov(128, 128, 60.0)
    drawing = ArmDrawing(CameraConfig(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy), 32, 32, KUKA_IIWA, base_plane=True)
    rng = np.random.default_rng(3)
    with sim_scene.bullet_client() as client:
        scene = sim_scene.build_scene(client, rng, np.zeros(7), rate_hz=15.0)
        position, quaternion = scene.arm_base_pose()
        eye = sim_scene.WORKSPACE_CENTER + np.array([1.2, 0.5, 0.9])
        rotation, camera_quaternion = look_at(eye, sim_scene.WORKSPACE_CENTER)
        _, depth, bodies = scene.render_geometry(k, eye, camera_quaternion)
    base = base_matrix(tuple(position), tuple(quaternion))[0].double().numpy()
    in_camera = np.concatenate([rotation.T @ base[:, :3], rotation.T @ (base[:, 3:] - eye[:, None])], axis=1)
    plane = drawing.image(torch.zeros(1, 7), torch.tensor(in_camera)[None])[0, KUKA_IIWA.num_links + 1 :]
    assert plane.shape == (BASE_PLANE_CHANNELS, 128, 128)  # 32 x 4 samples a side: one per image pixel
    meets, x, y, inverse, up = plane.numpy()
    table = (bodies == scene.surfaces[1]) & (depth < 3.0)
    assert table.sum() > 2000
    assert meets[table].min() == 1 and (up[table] < 0).all()
    # The distance along the ray to the plane is the rendered one (depth along z -> along the ray)
    # on nearly all the table's pixels: the rest are its sides and edges, below the plane.
    matches = np.abs(1 / inverse / (depth / drawing_z(k)) - 1) < 0.005
    assert matches[table].mean() > 0.9, matches[table].mean()
    top = table & matches
    # Base frame x, y of the table top: within the table's 1.5 m x 1.0 m, the base 0.3-0.45 m from its centre.
    table_x = np.arctanh(np.clip(x[top], -0.999, 0.999)) * PLANE_SCALE
    table_y = np.arctanh(np.clip(y[top], -0.999, 0.999)) * PLANE_SCALE
    assert np.hypot(table_x, table_y).max() < math.hypot(0.75 + 0.45, 0.5 + 0.15) + 0.05


def drawing_z(k: object) -> np.ndarray:
    """Per image pixel, the optical-axis component of its unit ray: depth along z / distance along the ray."""
    u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))  # type: ignore[attr-defined]
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, dtype=float)])  # type: ignore[attr-defined]
    return 1 / np.linalg.norm(rays, axis=0)


def test_the_base_plane_from_above_and_level() -> None:
    drawing = ArmDrawing(CameraConfig(), 16, 16, KUKA_IIWA, base_plane=True)
    joints = torch.zeros(1, 7)
    # Looking straight down from 2 m: the base's z axis points back at the camera (-z_cam).
    down = torch.tensor([[[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.0]]])
    meets, x, y, inverse, up = drawing.plane(down)[0].unflatten(1, (64, 64))  # type: ignore[no-untyped-call]
    assert meets.min() == 1 and (up < -0.7).all()  # the corners of a wide view lean out
    centre = (slice(31, 33), slice(31, 33))
    assert x[centre].abs().max() < 0.05 and y[centre].abs().max() < 0.05
    torch.testing.assert_close(inverse[centre], torch.full((2, 2), 0.5), atol=2e-3, rtol=0)
    # Level, 1 m above the plane: the upper half sees the sky (up > 0, no hit), the lower half the plane.
    level = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 1.0], [0, 1, 0, 0]]])
    meets, _, _, inverse, up = drawing.plane(level)[0].unflatten(1, (64, 64))  # type: ignore[no-untyped-call]
    assert (meets[:32] == 0).all() and (up[:32] > 0).all() and (inverse[:32] == 0).all()
    assert (meets[32:] == 1).all() and (up[32:] < 0).all()
    # Coverage and depth of the arm come first, unchanged; the plane's channels follow.
    plain = ArmDrawing(CameraConfig(), 16, 16, KUKA_IIWA)
    torch.testing.assert_close(drawing(joints, level)[:, : KUKA_IIWA.num_links + 1], plain(joints, level))
    assert drawing.num_channels == KUKA_IIWA.num_links + 1 + BASE_PLANE_CHANNELS
    with pytest.raises(ConfigError, match='arm_base_plane needs an arm'):
        GeneratorConfig(sink_ray_origin_scale=1.0, arm_base_plane=True)
