"""The arm drawn from its links' meshes, and each link's colour in frame 0 pasted where it is drawn."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from aapt_ros.model.arm import KUKA_IIWA, KUKA_IIWA_MESHES, ArmDrawing, chain_moving_like
from aapt_ros.model.config import CameraConfig, ConfigError, VAEConfig
from aapt_ros.model.generator import CausalGenerator
from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config

BASE_AHEAD = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.3], [0, 1, 0, 1.5]]])  # base 1.5 m ahead, arm up (-y)
BASE_NEAR = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 0.7]]])  # 0.7 m: links wide in the tiny camera
JOINTS = torch.tensor([[0.3, 0.5, -0.2, -1.0, 0.1, 0.6, 0.0]])


def pasting_generator(weight: float = 0.5, chain: str = 'kuka_iiwa_meshes') -> CausalGenerator:
    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9, 'fast_decoder_arm_paste': weight}
    return CausalGenerator(tiny_config(vae={**vae, 'fast_decoder_arm_paste_chain': chain}, **PLANE_WARPS_IN_PIXELS))


def test_the_mesh_chain_moves_like_the_capsules_and_draws_other_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    from aapt_ros.model import arm

    capsules, meshes = (ArmDrawing(CameraConfig(), 16, 16, chain) for chain in (KUKA_IIWA, KUKA_IIWA_MESHES))
    torch.testing.assert_close(capsules.link_poses(JOINTS, BASE_AHEAD), meshes.link_poses(JOINTS, BASE_AHEAD))
    _, capsule_links = capsules.image_and_links(JOINTS, BASE_AHEAD)
    drawn, mesh_links = meshes.image_and_links(JOINTS, BASE_AHEAD)
    assert drawn.shape == (1, KUKA_IIWA.num_links + 1, 64, 64) and mesh_links.shape == (1, 64, 64)
    both = (capsule_links >= 0) & (mesh_links >= 0)
    assert both.sum() > 100 and (capsule_links[both] != mesh_links[both]).any()  # another link here and there
    # Each link of the meshes is its spheres, centred where the link's frame puts them.
    centres, radii = meshes.spheres(JOINTS, BASE_AHEAD)
    assert centres.shape == (1, KUKA_IIWA.num_links, 16, 3) and radii.shape == (KUKA_IIWA.num_links, 16)
    assert chain_moving_like('kuka_iiwa_meshes', 'kuka_iiwa') is KUKA_IIWA_MESHES
    with pytest.raises(ConfigError, match='needs a generator that draws the arm'):
        chain_moving_like('kuka_iiwa_meshes', '')
    monkeypatch.setitem(arm.ARM_CHAINS, 'shorter', KUKA_IIWA._replace(tip=(0.0, 0.0, 0.0)))
    with pytest.raises(ConfigError, match=r'moves unlike generator\.arm_chain'):
        chain_moving_like('shorter', 'kuka_iiwa')


def test_each_links_colour_in_frame_0_is_pasted_where_the_link_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    from aapt_ros.model import arm

    # Without materials each link has only its own colour (the next test: those of one material).
    monkeypatch.setitem(arm.ARM_CHAINS, 'meshes_plain', KUKA_IIWA_MESHES._replace(materials=()))
    g = pasting_generator(weight=0.5, chain='meshes_plain')
    assert g.paste_drawing is not None and g.paste_drawing.chain.spheres == KUKA_IIWA_MESHES.spheres
    camera = g.config.camera
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    _, links = g._drawn(g.paste_drawing, _actions(), BASE_NEAR, eye, zero)  # frame 0's drawing
    # Frame 0 painted link by link: link l in grey level l / 10, the background -1.
    full = torch.nn.functional.interpolate(links[:, None].float(), size=(camera.height, camera.width), mode='nearest')
    image = torch.where(full >= 0, full / 10, torch.full_like(full, -1.0)).expand(-1, 3, -1, -1)
    colours = g.sink_link_colours(image, _actions(), BASE_NEAR)  # (1, L, 4)
    shown = colours[0, :, 3] > 0.5
    assert shown.sum() >= 2
    for link in torch.nonzero(shown)[:, 0].tolist():
        torch.testing.assert_close(colours[0, link, :3], torch.full((3,), link / 10))
    assert (colours[0, ~shown] == 0).all()
    # The same pose: the colour image is frame 0's arm, where the links it shows are drawn.
    painted = g.arm_colour_image(colours, _actions(), BASE_NEAR, eye, zero)  # (1, 4, H, W)
    on = painted[:, 3:] > 0.5
    assert on.sum() > 20
    torch.testing.assert_close(painted[:, :3][on.expand(-1, 3, -1, -1)], image[on.expand(-1, 3, -1, -1)])
    # The paste moves the decoder's image half way there, and leaves the rest.
    decoded = torch.zeros(1, 3, camera.height, camera.width)
    pasted = g.paste_arm(decoded, painted)
    torch.testing.assert_close(pasted, 0.5 * painted[:, :3] * on)
    # An unknown base: no colours, nothing pasted.
    unknown = torch.zeros(1, 3, 4)
    assert g.sink_link_colours(image, _actions(), unknown).abs().sum() == 0
    assert g.arm_colour_image(colours, _actions(), unknown, eye, zero).abs().sum() == 0


def test_a_link_frame_0_does_not_show_takes_the_colour_of_one_of_its_material() -> None:
    g = pasting_generator()
    drawing = g.paste_drawing
    assert drawing is not None and KUKA_IIWA_MESHES.materials[1] == KUKA_IIWA_MESHES.materials[2] == 'Blue'
    assert drawing.same_material[1, 4] and not drawing.same_material[1, 3]
    camera = g.config.camera
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    _, links = g._drawn(drawing, _actions(), BASE_NEAR, eye, zero)
    full = torch.nn.functional.interpolate(links[:, None].float(), size=(camera.height, camera.width), mode='nearest')
    image = torch.where(full >= 0, (full + 1) / 10, torch.full_like(full, -1.0)).expand(-1, 3, -1, -1)
    colours = g.sink_link_colours(image, _actions(), BASE_NEAR)[0]  # (L, 4)
    level = [(k + 1) / 10 for k in range(KUKA_IIWA.num_links)]  # link k painted (k + 1) / 10
    own = torch.tensor([bool((colours[k, :3] == level[k]).all()) for k in range(KUKA_IIWA.num_links)])
    assert own.any() and (colours[own, 3] == 1).all()
    borrowed = 0
    for link in range(KUKA_IIWA.num_links):
        if own[link]:
            continue
        alike = [k for k in range(KUKA_IIWA.num_links) if own[k] and drawing.same_material[link, k]]
        if alike:  # the colour of a link of its material that frame 0 shows
            assert colours[link, 3] == 1 and any(bool((colours[link, :3] == level[k]).all()) for k in alike)
            borrowed += 1
        else:
            assert (colours[link] == 0).all()
    assert borrowed >= 1
    # Without materials every link is its own: no colour for the links frame 0 does not show.
    plain = ArmDrawing(camera, g.config.latent_height, g.config.latent_width, KUKA_IIWA_MESHES._replace(materials=()))
    assert torch.equal(plain.same_material, torch.eye(KUKA_IIWA.num_links, dtype=torch.bool))


def _actions() -> torch.Tensor:
    return JOINTS.clone()


def test_the_paste_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r'fast_decoder_arm_paste must be in \[0, 1\]'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_arm_channels=9, fast_decoder_arm_paste=1.5)
    with pytest.raises(ConfigError, match='needs a light decoder that reads the arm drawing'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_arm_paste=0.5)
    with pytest.raises(ConfigError, match=r'set vae\.fast_decoder_arm_paste > 0 too'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_arm_channels=9, fast_decoder_arm_paste_chain='kuka_iiwa')
    with pytest.raises(ConfigError, match=r'unknown generator\.arm_chain'):
        pasting_generator(chain='ur5')
    assert pasting_generator(chain='').paste_drawing.chain is KUKA_IIWA  # type: ignore[union-attr]
    with pytest.raises(ValueError, match='pastes no arm'):
        CausalGenerator(tiny_config(**PLANE_WARPS_IN_PIXELS)).arm_colour_image(
            torch.zeros(1, 8, 4), _actions(), BASE_AHEAD, torch.eye(3)[None], torch.zeros(1, 3)
        )


def test_add_arm_paste_copies_the_weights_bit_for_bit(tmp_path: Path) -> None:
    import sys

    from aapt_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from aapt_ros.model.init_checkpoint import untrained_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
    import add_arm_paste

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9}
    source = save_checkpoint(
        untrained_checkpoint(tiny_config(vae=vae, **PLANE_WARPS_IN_PIXELS), seed=0), tmp_path / 'source'
    )
    assert add_arm_paste.main([str(source), str(tmp_path / 'pasting'), '--chain', 'kuka_iiwa_meshes']) == 0
    for name in ('vae.safetensors', 'generator.safetensors', 'extras.safetensors'):
        assert (source / name).read_bytes() == (tmp_path / 'pasting' / name).read_bytes()
    config = load_checkpoint(tmp_path / 'pasting').config
    assert dataclasses.replace(config.vae, fast_decoder_arm_paste=0.0, fast_decoder_arm_paste_chain='') == (
        load_checkpoint(source).config.vae
    )
    assert (config.vae.fast_decoder_arm_paste, config.vae.fast_decoder_arm_paste_chain) == (0.5, 'kuka_iiwa_meshes')
    assert 'arm paste' in (tmp_path / 'pasting' / 'MODEL_CARD_FRAGMENT.md').read_text()
    assert add_arm_paste.main([str(source), str(tmp_path / 'pasting')]) == 2  # never overwritten
    assert add_arm_paste.main([str(source), str(tmp_path / 'other'), '--weight', '2']) == 2


def pybullet_arm_views(seeds: int = 3) -> list[tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]]:
    """pybullet's view of the arm in random scenes, 128 x 128 at 60 degrees: per scene the pixels
    it shows of the arm (bool), their links (base 0), the joints (1, 7) and the base in the camera
    (1, 3, 4)."""
    p = pytest.importorskip('pybullet')
    sim_scene = pytest.importorskip('aapt_ros.data.sim_scene')
    from tests.model.test_arm import base_matrix, look_at

    k = sim_scene.Intrinsics.from_fov(128, 128, 60.0)
    views = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        with sim_scene.bullet_client() as client:
            scene = sim_scene.build_scene(client, rng, rng.uniform(-1.2, 1.2, 7), rate_hz=15.0)
            position, quaternion = scene.arm_base_pose()
            joints, _ = scene.joint_state()
            azimuth = rng.uniform(0, 2 * np.pi)
            eye = sim_scene.WORKSPACE_CENTER + 1.6 * np.array(
                [np.cos(0.5) * np.cos(azimuth), np.cos(0.5) * np.sin(azimuth), np.sin(0.5)]
            )
            rotation, camera_quaternion = look_at(eye, sim_scene.WORKSPACE_CENTER)
            flags = p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX
            segmentation = np.asarray(scene._camera_image(k, eye, camera_quaternion, flags)[4]).reshape(128, 128)
        arm = (segmentation >= 0) & ((segmentation & ((1 << 24) - 1)) == scene.arm)
        link = segmentation >> 24  # pybullet: link index + 1 << 24, the base -1; ours: the base 0
        base = base_matrix(tuple(position), tuple(quaternion))[0].double().numpy()
        in_camera = np.concatenate([rotation.T @ base[:, :3], rotation.T @ (base[:, 3:] - eye[:, None])], axis=1)
        views.append((arm, link, torch.tensor(joints)[None].float(), torch.tensor(in_camera)[None].float()))
    return views


def agreement(arm: np.ndarray, link: np.ndarray, drawn: np.ndarray) -> tuple[float, float]:
    """IoU of a drawing's links (-1: none) with pybullet's arm, and the share of both on the right link."""
    both = arm & (drawn >= 0)
    return both.sum() / (arm | (drawn >= 0)).sum(), (drawn[both] == link[both]).mean()


PYBULLET_CAMERA = CameraConfig(fx=64 / np.tan(np.pi / 6), fy=64 / np.tan(np.pi / 6), cx=64.0, cy=64.0)


def test_the_meshes_cover_pybullets_render_closer_than_the_capsules() -> None:
    drawings = {chain: ArmDrawing(PYBULLET_CAMERA, 32, 32, chain) for chain in (KUKA_IIWA, KUKA_IIWA_MESHES)}
    scores: dict[object, list[tuple[float, float]]] = {chain: [] for chain in drawings}  # 1 sample a pixel
    for arm, link, joints, base in pybullet_arm_views():
        for chain, drawing in drawings.items():
            scores[chain].append(agreement(arm, link, drawing.image_and_links(joints, base)[1][0].numpy()))
    capsules, meshes = (np.mean(scores[chain], axis=0) for chain in drawings)
    assert meshes[0] > capsules[0] + 0.03 and meshes[0] > 0.8, (capsules, meshes)  # IoU
    assert meshes[1] > 0.85 and meshes[1] > capsules[1] + 0.1, (capsules, meshes)  # the right link


def test_the_engine_pastes_each_links_colour_after_the_decoder() -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from aapt_ros.streaming.engine import StreamEngine, from_uint8_images, to_uint8_images

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9, 'fast_decoder_arm_paste': 0.6}
    vae['fast_decoder_arm_paste_chain'] = 'kuka_iiwa_meshes'  # type: ignore[assignment]
    config = tiny_config(vae=vae, sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    engine = StreamEngine(untrained_checkpoint(config, seed=0), batch_size=1, dtype='float32')
    assert engine.decoder_pastes_arm and engine.link_colours is not None
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    start[:, :, :, 0] = 200  # red enough to tell the links' colours from the decoder's
    engine.start(np.ones(1, bool), start, JOINTS.double().numpy(), BASE_NEAR.double().numpy())
    g = engine.generator
    images = from_uint8_images(torch.from_numpy(start), torch.float32)[:, 0]
    torch.testing.assert_close(engine.link_colours, g.sink_link_colours(images, engine.actions, engine.arm_bases))
    assert engine.link_colours[0, :, 3].sum() >= 1  # frame 0 shows some links
    frames = engine.step(np.eye(3)[None], np.array([[0.01, 0.0, 0.0]]), JOINTS.double().numpy())
    drawn = g.arm_image(engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
    colours = g.arm_colour_image(
        engine.link_colours, engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations
    )
    with torch.no_grad():
        decoded = engine.vae.decode_fast(engine.latents[:, None], drawn[:, None])[:, 0]
    np.testing.assert_array_equal(frames, to_uint8_images(g.paste_arm(decoded, colours)).numpy())
    assert colours[:, 3].sum() > 0 and not np.array_equal(frames, to_uint8_images(decoded).numpy())
    # The full decoder is not the light one: no paste.
    full = StreamEngine(untrained_checkpoint(config, seed=0), batch_size=1, decoder='full')
    assert not full.decoder_pastes_arm and full.link_colours is None


def test_fit_arm_spheres_fills_a_box_from_inside(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
    import fit_arm_spheres

    corners = [(x, y, z) for x in (-0.1, 0.1) for y in (-0.05, 0.05) for z in (0.0, 0.3)]  # a 20 x 10 x 30 cm box
    faces = [(1, 3, 4, 2), (5, 6, 8, 7), (1, 2, 6, 5), (3, 7, 8, 4), (1, 5, 7, 3), (2, 4, 8, 6)]  # outward, 1-based
    lines = [f'v {x} {y} {z}' for x, y, z in corners] + ['f ' + ' '.join(map(str, f)) for f in faces]
    (tmp_path / 'link_0.obj').write_text('\n'.join(lines) + '\n')
    vertices, triangles = fit_arm_spheres.read_obj(tmp_path / 'link_0.obj')
    assert vertices.shape == (8, 3) and triangles.shape == (12, 3)
    spheres = fit_arm_spheres.fit_link(vertices, triangles, spheres=4, grid=0.02, margin=0.0)
    assert spheres.shape == (4, 4)
    centres, radii = spheres[:, :3], spheres[:, 3]
    assert (np.abs(centres[:, 0]) + radii <= 0.1 + 0.02).all() and (np.abs(centres[:, 1]) + radii <= 0.05 + 0.02).all()
    assert 0.04 <= radii.max() <= 0.06  # the box's half thickness, to within a grid step
    assert centres[:, 2].max() - centres[:, 2].min() > 0.1  # spread along the box, not piled up
    out = tmp_path / 'spheres.json'
    assert (
        fit_arm_spheres.main([str(tmp_path), '--links', '1', '--spheres', '2', '--grid', '0.02', '--output', str(out)])
        == 0
    )
    assert fit_arm_spheres.main([str(tmp_path), '--links', '1', '--output', str(out)]) == 2  # never overwritten
