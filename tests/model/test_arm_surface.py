"""The arm paste's links drawn from points on their meshes (vae.fast_decoder_arm_paste_surface)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aapt_ros.model.arm import KUKA_IIWA_MESHES, ArmDrawing
from aapt_ros.model.arm_surface import ArmSurface, fit_shading, light_directions, read_obj, sample_surfaces
from aapt_ros.model.config import CameraConfig, ConfigError, VAEConfig
from aapt_ros.model.generator import CausalGenerator
from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

CAMERA = CameraConfig(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)


def plate(half: float, z: float, spacing: float = 0.0005) -> np.ndarray:
    """Points on a square plate facing the camera, (N, 3)."""
    side = np.arange(-half, half + spacing / 2, spacing)
    x, y = np.meshgrid(side, side)
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1).astype(np.float32)


def drawn(groups: list[np.ndarray]) -> np.ndarray:
    surface = ArmSurface(tuple(len(g) for g in groups))
    surface.points.copy_(torch.from_numpy(np.concatenate(groups)))
    poses = torch.eye(4).expand(1, len(groups), 4, 4)  # every link's frame is the camera's
    return surface.draw(poses, CAMERA)[0][0].numpy()


def test_a_pixel_shows_a_link_where_its_centre_is_on_it_not_where_a_point_merely_falls() -> None:
    # The plate's edges fall at 10.25 px from the centre column: pixels -10..10 have their centres
    # on it; splatting every point into the pixel it falls in would also fill pixels +-11.
    links = drawn([plate(10.25 / CAMERA.fx, 1.0)])
    columns = np.flatnonzero((links == 0).any(axis=0)) - int(CAMERA.cx)
    rows = np.flatnonzero((links == 0).any(axis=1)) - int(CAMERA.cy)
    assert columns.tolist() == list(range(-10, 11)) and rows.tolist() == list(range(-10, 11))
    assert (links[14:35, 22:43] == 0).all() and (links >= 0).sum() == 21 * 21  # no holes


def test_the_nearest_link_is_shown_even_where_it_has_fewer_points() -> None:
    front = plate(5.25 / CAMERA.fx, 1.0, spacing=0.004)  # about 5 points a pixel: few at the centres
    behind = plate(10.25 * 1.5 / CAMERA.fx, 1.5)  # dense, larger, half a metre behind
    links = drawn([front, behind])
    assert (links[19:30, 27:38] == 0).all()  # the front plate, holes filled, the back never through it
    assert (links[14:35, 22:43] >= 0).all() and (links[14:35, 22:43] == 1).sum() == 21 * 21 - 11 * 11
    assert (links[:, :22] == -1).all()  # beyond both: nothing


def test_points_behind_the_camera_or_outside_the_image_are_not_drawn() -> None:
    assert (drawn([plate(0.2, -1.0)]) == -1).all()
    assert (drawn([plate(0.2, 1.0) + np.float32([5.0, 0.0, 0.0])]) == -1).all()


def test_points_are_spread_over_the_meshes_by_area(tmp_path: Path) -> None:
    def box(size: tuple[float, float, float]) -> Path:
        corners = [(x * size[0], y * size[1], z * size[2]) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0, 1)]
        faces = [(2, 4, 3, 1), (7, 8, 6, 5), (5, 6, 2, 1), (4, 8, 7, 3), (3, 7, 5, 1), (6, 8, 4, 2)]  # outward
        path = tmp_path / f'box_{size[0]}.obj'
        path.write_text(
            '\n'.join([f'v {x} {y} {z}' for x, y, z in corners] + [f'f {a} {b} {c} {d}' for a, b, c, d in faces])
        )
        return path

    small, large = read_obj(box((0.1, 0.1, 0.1))), read_obj(box((0.2, 0.2, 0.2)))  # 4x the area
    assert small[0].shape == (8, 3) and small[1].shape == (12, 3)
    points, normals, counts = sample_surfaces([small, large], 10000)
    assert points.shape == normals.shape == (10000, 3) and points.dtype == np.float32 and sum(counts) == 10000
    assert abs(counts[1] / counts[0] - 4) < 0.1
    x, y, z = points[: counts[0]].T
    to_face = np.min([np.abs(np.abs(x) - 0.05), np.abs(np.abs(y) - 0.05), np.abs(z), np.abs(z - 0.1)], axis=0)
    assert (to_face < 1e-6).all()  # each point on one of the small box's faces
    # Their normals: unit, pointing out of the box (smooth: a corner's blend of its faces').
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)
    centre = np.float32([0, 0, 0.05])
    assert ((points[: counts[0]] - centre) * normals[: counts[0]]).sum(1).min() > 0
    assert np.array_equal(sample_surfaces([small, large], 10000)[0], points)  # the same points for the same seed


def test_the_surface_config_is_checked() -> None:
    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9}
    with pytest.raises(ConfigError, match=r'needs vae\.fast_decoder_arm_paste > 0'):
        VAEConfig(**vae, fast_decoder_arm_paste_surface=(10,) * 8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match='not all 0'):
        VAEConfig(**vae, fast_decoder_arm_paste=0.5, fast_decoder_arm_paste_surface=(0,) * 8)  # type: ignore[arg-type]
    paste = {**vae, 'fast_decoder_arm_paste': 0.5, 'fast_decoder_arm_paste_chain': 'kuka_iiwa_meshes'}
    with pytest.raises(ConfigError, match='points for 3 links; the chain drawn for the paste has 8'):
        CausalGenerator(
            tiny_config(vae={**paste, 'fast_decoder_arm_paste_surface': (10, 10, 10)}, **PLANE_WARPS_IN_PIXELS)
        )


def kuka_meshes() -> Path:
    pybullet_data = pytest.importorskip('pybullet_data')
    return Path(pybullet_data.getDataPath()) / 'kuka_iiwa' / 'meshes'


def test_the_surface_covers_pybullets_render_closer_than_the_spheres() -> None:
    from tests.model.test_arm_paste import PYBULLET_CAMERA, agreement, pybullet_arm_views

    meshes = [read_obj(kuka_meshes() / f'link_{i}.obj') for i in range(KUKA_IIWA_MESHES.num_links)]
    points, _, counts = sample_surfaces(meshes, 131072)
    surface = ArmSurface(counts)
    surface.points.copy_(torch.from_numpy(points))
    spheres = ArmDrawing(PYBULLET_CAMERA, 16, 16, KUKA_IIWA_MESHES)
    scores: dict[str, list[tuple[float, float]]] = {'spheres': [], 'surface': []}
    for arm, link, joints, base in pybullet_arm_views():
        scores['spheres'].append(agreement(arm, link, spheres.fine_links(joints, base, 2)[0].numpy()))
        drawn = surface.draw(spheres.link_poses(joints, base), PYBULLET_CAMERA)[0][0].numpy()
        scores['surface'].append(agreement(arm, link, drawn))
    by_spheres, by_surface = (np.mean(scores[name], axis=0) for name in scores)
    assert by_surface[0] > 0.95 and by_surface[0] > by_spheres[0] + 0.02, (by_spheres, by_surface)  # IoU
    assert by_surface[1] > 0.95 and by_surface[1] > by_spheres[1] + 0.02, (by_spheres, by_surface)  # the right link


def test_add_arm_paste_stores_the_surface_and_the_checkpoint_checks_it(tmp_path: Path) -> None:
    import sys

    from safetensors.torch import load_file, save_file

    from aapt_ros.model.checkpoint import (
        ARM_NORMALS_KEY,
        ARM_SURFACE_KEY,
        CheckpointError,
        load_checkpoint,
        save_checkpoint,
    )
    from aapt_ros.model.init_checkpoint import untrained_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
    import add_arm_paste

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9}
    config = tiny_config(vae=vae, **PLANE_WARPS_IN_PIXELS)
    source = save_checkpoint(untrained_checkpoint(config, seed=0), tmp_path / 'source')
    out = tmp_path / 'surface'
    flags = ['--chain', 'kuka_iiwa_meshes', '--paste-surface', str(kuka_meshes()), '--surface-points', '4096']
    assert add_arm_paste.main([str(source), str(out), *flags]) == 0
    loaded = load_checkpoint(out)
    counts = loaded.config.vae.fast_decoder_arm_paste_surface
    assert len(counts) == 8 and sum(counts) == 4096 and loaded.generator.arm_surface is not None
    meshes = [read_obj(kuka_meshes() / f'link_{i}.obj') for i in range(8)]
    points, normals, _ = sample_surfaces(meshes, 4096)
    np.testing.assert_array_equal(loaded.generator.arm_surface.points.numpy(), points)
    np.testing.assert_array_equal(loaded.generator.arm_surface.normals.numpy(), normals)
    assert 'from 4096 points on their meshes' in (out / 'MODEL_CARD_FRAGMENT.md').read_text()
    # Saved again, the points go with it.
    again = save_checkpoint(loaded, tmp_path / 'again')
    torch.testing.assert_close(load_checkpoint(again).generator.arm_surface.points, loaded.generator.arm_surface.points)  # type: ignore[union-attr]
    # An extras file without them, or with others, is named.
    extras = load_file(str(out / 'extras.safetensors'))
    save_file({k: v for k, v in extras.items() if k != ARM_SURFACE_KEY}, str(out / 'extras.safetensors'))
    with pytest.raises(CheckpointError, match=f'extras.safetensors: .*{ARM_SURFACE_KEY}'):
        load_checkpoint(out)
    save_file({**extras, ARM_SURFACE_KEY: extras[ARM_SURFACE_KEY][:10]}, str(out / 'extras.safetensors'))
    with pytest.raises(CheckpointError, match='of shape'):
        load_checkpoint(out)
    # The normals light the paste: a shaded model needs them, an unshaded one may lack them.
    without_normals = {k: v for k, v in extras.items() if k != ARM_NORMALS_KEY}
    save_file(without_normals, str(out / 'extras.safetensors'))
    assert load_checkpoint(out).generator.arm_surface.normals.abs().sum() == 0  # type: ignore[union-attr]
    shaded = tmp_path / 'shaded'
    assert add_arm_paste.main([str(source), str(shaded), *flags, '--paste-shading']) == 0
    assert load_checkpoint(shaded).config.vae.fast_decoder_arm_paste_shading
    assert 'shaded by a light fitted on frame 0' in (shaded / 'MODEL_CARD_FRAGMENT.md').read_text()
    save_file(without_normals, str(shaded / 'extras.safetensors'))
    with pytest.raises(CheckpointError, match=ARM_NORMALS_KEY):
        load_checkpoint(shaded)
    assert add_arm_paste.main([str(source), str(tmp_path / 'unlit'), '--paste-shading']) == 2  # needs the surface
    # A folder without the link meshes is refused.
    assert add_arm_paste.main([str(source), str(tmp_path / 'none'), *flags[:2], '--paste-surface', str(tmp_path)]) == 2
    assert not (tmp_path / 'none').exists()


def sphere(radius: float, centre: tuple[float, float, float], count: int) -> tuple[np.ndarray, np.ndarray]:
    normals = light_directions(count).numpy()
    return (normals * radius + np.float32(centre)).astype(np.float32), normals


def test_the_light_fitted_on_a_lit_ball_is_the_one_that_lit_it() -> None:
    points, normals = sphere(0.15, (0.0, 0.0, 1.0), 40000)
    surface = ArmSurface((len(points),))
    surface.points.copy_(torch.from_numpy(points))
    surface.normals.copy_(torch.from_numpy(normals))
    links, drawn_normals = surface.draw(torch.eye(4)[None, None], CAMERA, normals=True)
    assert drawn_normals is not None and (links >= 0).sum() > 150  # a disc of radius 7.5 px
    light = torch.tensor([0.3, -0.6, -0.74])
    light = light / light.norm()
    ambient, diffuse = torch.tensor([-0.6, -0.2, 0.1]), torch.tensor([0.8, 0.5, 0.3])
    lit = torch.einsum('bchw,c->bhw', drawn_normals, light).clamp(min=0)
    image = (ambient[None, :, None, None] + lit[:, None] * diffuse[None, :, None, None]) * (links >= 0)[:, None]
    fit = fit_shading(image, links, drawn_normals, torch.zeros(1, dtype=torch.long))
    assert fit.shape == (1, 1, 10) and fit[0, 0, 3] == 1
    assert torch.dot(fit[0, 0, 7:10], light) > math.cos(math.radians(6))  # the candidates are ~4.5 degrees apart
    torch.testing.assert_close(fit[0, 0, :3], ambient, atol=0.05, rtol=0)
    torch.testing.assert_close(fit[0, 0, 4:7], diffuse, atol=0.1, rtol=0)
    # A material with too few pixels is not fitted; nor is anything in a stream with no arm.
    assert not fit_shading(image, torch.full_like(links, -1), drawn_normals, torch.zeros(1, dtype=torch.long)).any()


@pytest.mark.parametrize('shading', [False, True])
def test_the_engine_pastes_the_links_the_surface_draws(shading: bool) -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from aapt_ros.streaming.engine import StreamEngine

    meshes = [read_obj(kuka_meshes() / f'link_{i}.obj') for i in range(8)]
    points, normals, counts = sample_surfaces(meshes, 16384)
    vae = {
        'fast_decoder_channels': 16,
        'fast_decoder_arm_channels': 9,
        'fast_decoder_arm_paste': 1.0,
        'fast_decoder_arm_paste_chain': 'kuka_iiwa_meshes',
        'fast_decoder_arm_paste_surface': counts,
        'fast_decoder_arm_paste_shading': shading,
    }
    config = tiny_config(vae=vae, sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    checkpoint = untrained_checkpoint(config, seed=0)
    surface = checkpoint.generator.arm_surface
    assert surface is not None
    surface.points.copy_(torch.from_numpy(points))
    surface.normals.copy_(torch.from_numpy(normals))
    engine = StreamEngine(checkpoint, batch_size=1, dtype='float32')
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    joints = np.array([[0.3, 0.5, -0.2, -1.0, 0.1, 0.6, 0.0]])
    base_near = np.array([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 0.7]]])
    engine.start(np.ones(1, bool), start, joints, base_near)
    g = engine.generator
    assert engine.link_colours is not None and engine.link_colours.shape == (1, 8, 10 if shading else 4)
    link_colours = torch.ones_like(engine.link_colours)  # every link shown, white, lit from +x
    colours = g.arm_colour_image(
        link_colours, engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations
    )
    poses = g._paste_drawing().link_poses(engine.actions[:, g.arm_joint_indices], engine.arm_bases)
    links, drawn_normals = surface.draw(poses, config.camera, normals=True)
    assert (links >= 0).sum() > 50
    assert torch.equal(colours[:, 3] > 0, links >= 0)  # frame 0's camera: the drawn links are the flags
    if shading:  # 1 + max(0, n . (1, 1, 1)) with n in the base's frame
        assert drawn_normals is not None
        in_base = torch.einsum('bji,bjhw->bihw', engine.arm_bases[:, :, :3].float(), drawn_normals)
        expected = (1 + in_base.sum(1).clamp(min=0)) * (links >= 0)
        torch.testing.assert_close(colours[:, 0], expected)
        assert colours[:, 0][links >= 0].std() > 0.1  # not flat
    else:
        assert (colours[:, :3][(links >= 0)[:, None].expand(-1, 3, -1, -1)] == 1).all()
