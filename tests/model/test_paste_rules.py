"""v26's rules around the light decoder: the arm paste drawn at the previous frame's action, the
ground tile folded from the nearest copies no static box hides, and the unseen surfaces pasted
over frame 0's arm too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from aapt_ros.model import ground_tile, static_boxes
from aapt_ros.model.config import ConfigError, VAEConfig
from aapt_ros.model.generator import CausalGenerator
from tests.conftest import PLANE_WARPS_IN_PIXELS, tiny_config
from tests.model import test_ground_tile as floor_scene
from tests.model.test_arm_paste import BASE_NEAR, JOINTS

FAR_AWAY = torch.tensor([[-50.0, 0.0, 0.5, 0.1, 0.1, 0.5]])  # a box that hides nothing the camera sees


def share_right(image: torch.Tensor, boxes: torch.Tensor | None, nearest: int) -> float:
    """The share of the floor behind the camera the tile folded from image draws right."""
    no_arm = torch.zeros(1, 1, floor_scene.CAMERA.height, floor_scene.CAMERA.width)
    tile, axes = ground_tile.fold_first_image(
        image,
        no_arm,
        floor_scene.GROUND,
        floor_scene.POSE_FRAME,
        floor_scene.CAMERA,
        floor_scene.PERIOD,
        boxes,
        nearest,
    )
    world, points = floor_scene.behind_the_camera()
    copied = ground_tile.tile_image(tile, axes, floor_scene.PERIOD, points, torch.ones(1, 1, 16, 32, dtype=torch.bool))
    right = np.abs(copied[0, 0].numpy() - floor_scene.floor(world)) < 0.3
    return float((right & (copied[0, 3].numpy() > 0.5)).mean())


def test_the_tile_takes_the_nearest_copies() -> None:
    image = floor_scene.first_image()
    # Beyond 3.5 m frame 0 draws the floor wrong (a haze, say): most copies of each texel lie there.
    v, u = np.mgrid[0 : floor_scene.CAMERA.height, 0 : floor_scene.CAMERA.width].astype(np.float64)
    cam = floor_scene.CAMERA
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1) @ floor_scene.TO_WORLD.T
    with np.errstate(divide='ignore'):
        depth = np.where(rays[..., 2] < 0, -floor_scene.HEIGHT / rays[..., 2], np.inf)
    hazy = image.clone()
    hazy[..., torch.from_numpy((depth > 3.5) & (depth <= ground_tile.MAX_DEPTH))] = 0.0
    assert share_right(hazy, None, 0) < 0.5  # the median of all copies is the haze
    assert share_right(hazy, FAR_AWAY, 3) > 0.8  # the three nearest are the floor
    assert share_right(image, FAR_AWAY, 3) > 0.85  # as good as all copies where all are right


def test_the_tile_leaves_out_the_copies_a_box_hides() -> None:
    image = floor_scene.first_image()
    # A crate on the floor 1.5 m ahead, 0.6 m tall, drawn black where frame 0's rays meet it first.
    crate = torch.tensor([[1.6, 0.0, 0.3, 0.3, 0.6, 0.3]])
    cam = floor_scene.CAMERA
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1) @ floor_scene.TO_WORLD.T
    origins = torch.tensor(floor_scene.POSITION, dtype=torch.float32)[None, :, None, None]
    entries = static_boxes.first_entries(origins, torch.tensor(rays, dtype=torch.float32).permute(2, 0, 1)[None], crate)
    on_crate = entries[0].isfinite()
    assert on_crate.float().mean() > 0.05
    with_crate = image.clone()
    with_crate[..., on_crate] = 0.0
    no_arm = torch.zeros(1, 1, cam.height, cam.width)

    def grey_texels(picture: torch.Tensor) -> float:  # the share of shown texels near the crate's black
        tile, _ = ground_tile.fold_first_image(
            picture, no_arm, floor_scene.GROUND, floor_scene.POSE_FRAME, cam, floor_scene.PERIOD, crate, 3
        )
        shown = tile[0, 3] > 0.5
        assert shown.float().mean() > 0.9
        return float((tile[0, 0][shown].abs() < 0.3).float().mean())

    # No more than the squares' blurred edges give without the crate: none of its black.
    assert grey_texels(with_crate) <= grey_texels(image) + 0.005
    assert share_right(with_crate, crate, 3) > 0.85


def test_the_unseen_surfaces_are_pasted_over_frame_0s_arm_when_asked() -> None:
    copies = torch.zeros(1, 4, 6, 32, 48)  # the table's and the ground's warps, the tile, the boxes' colour
    copies[:, 2, :3], copies[:, 3, :3] = 0.5, -0.5
    copies[:, 2, 3, :16] = 1  # the tile on the ground in the upper half, frame 0 shows all of it ...
    copies[:, 1, 4, :16] = 1
    copies[:, 1, 5, :8] = 0.5  # ... and its arm on the top quarter
    copies[:, 3, 3, 16:], copies[:, 0, 3, 16:], copies[:, 0, 4, 16:] = 1, 1, 1  # the table top, shown ...
    copies[:, 0, 5, 24:] = 1  # ... its lower quarter under frame 0's arm
    links = torch.full((1, 16, 24), -1)  # no arm drawn now
    decoded = torch.zeros(1, 3, 32, 48)
    plain = CausalGenerator(tiny_config(**PLANE_WARPS_IN_PIXELS)).eval()
    assert (plain.paste_unseen(decoded, copies, links) == 0).all()  # frame 0 shows it all: the decoder's
    config = plain.config
    under = dataclasses.replace(
        config.vae,
        fast_decoder_channels=16,
        fast_decoder_arm_channels=9,
        fast_decoder_warp_planes=2,
        fast_decoder_ground_tile=2.0,
        fast_decoder_static_boxes=((0.0, 0.0, 0.6, 0.5, 0.5, 0.025),),
        fast_decoder_paste_unseen=True,
        fast_decoder_paste_under_arm=True,
    )
    pasted = CausalGenerator(dataclasses.replace(config, vae=under)).eval().paste_unseen(decoded, copies, links)[0, 0]
    assert (pasted[:8] == 0.5).all() and (pasted[24:] == -0.5).all()  # the tile, the boxes' colour
    assert (pasted[8:24] == 0).all()


def test_the_engine_pastes_the_arm_where_the_previous_action_put_it() -> None:
    from aapt_ros.model.init_checkpoint import untrained_checkpoint
    from aapt_ros.streaming.engine import StreamEngine, to_uint8_images

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9, 'fast_decoder_arm_paste': 0.6}
    vae |= {'fast_decoder_arm_paste_chain': 'kuka_iiwa_meshes', 'fast_decoder_arm_paste_previous_action': True}
    config = tiny_config(vae=vae, sink_ray_origin_scale=0.5, arm_chain='kuka_iiwa')
    engine = StreamEngine(untrained_checkpoint(config, seed=0), batch_size=1, dtype='float32')
    start = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    start[:, :, :, 0] = 200
    engine.start(np.ones(1, bool), start, JOINTS.double().numpy(), BASE_NEAR.double().numpy())
    assert engine.paste_actions is not None
    torch.testing.assert_close(engine.paste_actions, JOINTS)
    g = engine.generator
    moves = [JOINTS + 0.3, JOINTS - 0.2]
    previous = JOINTS
    for joints in moves:
        frames = engine.step(np.eye(3)[None], np.array([[0.01, 0.0, 0.0]]), joints.double().numpy())
        drawn = g.arm_image(engine.actions, engine.arm_bases, engine.sink_rotations, engine.sink_translations)
        with torch.no_grad():
            decoded = engine.vae.decode_fast(engine.latents[:, None], drawn[:, None])[:, 0]
        at = {}
        for name, action in (('previous', previous), ('current', joints)):
            colours = g.arm_colour_image(
                engine.link_colours, action, engine.arm_bases, engine.sink_rotations, engine.sink_translations
            )
            at[name] = to_uint8_images(g.paste_arm(decoded, colours)).numpy()
        np.testing.assert_array_equal(frames, at['previous'])
        assert not np.array_equal(at['previous'], at['current'])
        torch.testing.assert_close(engine.paste_actions, joints)  # the next frame's
        previous = joints


def test_the_rules_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'set vae\.fast_decoder_arm_paste > 0 too'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_arm_channels=9, fast_decoder_arm_paste_previous_action=True)
    with pytest.raises(ConfigError, match='needs the ground tile and the static boxes'):
        VAEConfig(fast_decoder_channels=16, fast_decoder_warp_planes=2, fast_decoder_ground_tile_nearest=3)
    with pytest.raises(ConfigError, match=r'must be >= 0'):
        VAEConfig(fast_decoder_ground_tile_nearest=-1)
    with pytest.raises(ConfigError, match=r'extends vae\.fast_decoder_paste_unseen'):
        VAEConfig(fast_decoder_paste_under_arm=True)
    with pytest.raises(ConfigError, match=r'fast_decoder_arm_paste_upsampling must be >= 1'):
        VAEConfig(fast_decoder_arm_paste_upsampling=2)
    # tools/add_arm_paste.py sets them; the weights stay bit for bit.
    import sys

    from aapt_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from aapt_ros.model.init_checkpoint import untrained_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools'))
    import add_arm_paste

    vae = {'fast_decoder_channels': 16, 'fast_decoder_arm_channels': 9}
    source = save_checkpoint(
        untrained_checkpoint(tiny_config(vae=vae, **PLANE_WARPS_IN_PIXELS), seed=0), tmp_path / 'source'
    )
    assert add_arm_paste.main([str(source), str(tmp_path / 'lagged'), '--previous-action']) == 0
    assert load_checkpoint(tmp_path / 'lagged').config.vae.fast_decoder_arm_paste_previous_action
    assert (source / 'generator.safetensors').read_bytes() == (
        tmp_path / 'lagged' / 'generator.safetensors'
    ).read_bytes()
    assert add_arm_paste.main([str(source), str(tmp_path / 'other'), '--tile-nearest', '3']) == 2  # no tile here


def test_rays_enter_a_box_through_the_face_they_meet_first() -> None:
    box = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    origins = torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 3.0]]).T[None, :, None]
    directions = torch.tensor([[0.0, 0.0, -1.0], [-1.0, 0.1, 0.0], [0.0, 1.0, 0.2], [1.0, 0.0, 0.0]]).T[None, :, None]
    lengths, faces = static_boxes.first_entry_faces(origins, directions, box)  # (1, 1, 4) each
    assert faces.tolist() == [[[5, 1, 2, -1]]]  # +z, +x, -y, none
    torch.testing.assert_close(lengths, static_boxes.first_entries(origins, directions, box))
    torch.testing.assert_close(lengths[0, 0, :3], torch.tensor([2.0, 2.0, 2.0]))


def test_box_faces_and_the_sky_take_frame_0s_colours() -> None:
    from tests.model.test_static_boxes import BASE, BOXES, UNDER, in_camera

    g = CausalGenerator(tiny_config(**PLANE_WARPS_IN_PIXELS)).eval()
    h, w = g.config.camera.height, g.config.camera.width
    # Frame 0 from beside the table top, below its face: it shows the top's +x side and underside,
    # the ground, and the background above the horizon.
    pose_frame, base = in_camera(UNDER, np.eye(3, 4)), in_camera(UNDER, BASE)
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    lengths, faces = g.box_entries(pose_frame, BOXES, eye, zero)  # (1, H, W) each
    torch.testing.assert_close(lengths.isfinite(), faces >= 0)
    sky = g._sky(base, pose_frame, eye, zero, faces)[:, 0]
    assert {1, 4} <= set(faces.unique().tolist()) and sky.sum() >= 8 and (sky & (faces >= 0)).sum() == 0
    # Each face orientation painted in its own grey, the background white, the ground black.
    image = torch.where(faces >= 0, faces / 10, torch.where(sky, 1.0, -1.0))[:, None].expand(-1, 3, -1, -1)
    no_arm = torch.zeros(1, 1, h, w)
    face_colours = g.sink_face_colours(image, no_arm, pose_frame, BOXES)
    for face in range(static_boxes.FACES):
        shown = int((faces == face).sum()) >= 8
        assert face_colours[0, face, 3] == float(shown)
        if shown:
            torch.testing.assert_close(face_colours[0, face, :3], torch.full((3,), face / 10))
    sky_colour = g.sink_sky_colour(image, no_arm, base, pose_frame, BOXES)
    torch.testing.assert_close(sky_colour, torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    assert (g.sink_sky_colour(image, torch.ones(1, 1, h, w), base, pose_frame, BOXES) == 0).all()  # all arm
    assert (g.sink_face_colours(image, no_arm, torch.zeros(1, 3, 4), BOXES) == 0).all()  # no pose frame
    # Pasted into a grey image seen from frame 0's own pose: the faces and the sky come back, the
    # ground is the decoder's; no paste where an arm is drawn.
    decoded = torch.zeros(1, 3, h, w)
    no_links = torch.full((1, *g.arm.sample_size), -1)  # type: ignore[union-attr]
    pasted = g.paste_boxes_and_sky(
        decoded, no_links, None, faces, face_colours, sky_colour, pose_frame, base, eye, zero
    )
    shown = face_colours[0, faces.clamp(min=0), 3] > 0.5  # (1, H, W)
    torch.testing.assert_close(pasted[:, 0][(faces >= 0) & shown], image[:, 0][(faces >= 0) & shown])
    assert (pasted[:, 0][sky] == 1).all() and (pasted[:, 0][(faces < 0) & ~sky] == 0).all()
    arm_everywhere = torch.zeros_like(no_links)
    untouched = g.paste_boxes_and_sky(
        decoded, arm_everywhere, None, faces, face_colours, sky_colour, pose_frame, base, eye, zero
    )
    assert (untouched == 0).all()


def test_the_fine_silhouette_follows_the_spheres_drawn_at_twice_the_samples() -> None:
    from aapt_ros.model.arm import KUKA_IIWA_MESHES, ArmDrawing
    from aapt_ros.model.config import CameraConfig

    camera = CameraConfig()  # 128 x 128
    coarse, exact = ArmDrawing(camera, 16, 16, KUKA_IIWA_MESHES), ArmDrawing(camera, 32, 32, KUKA_IIWA_MESHES)
    base = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.3], [0, 1, 0, 1.2]]])
    for joints in (JOINTS, JOINTS * -0.7):
        _, at_samples = coarse.image_and_links(joints, base)  # (1, 64, 64)
        torch.testing.assert_close(coarse.fine_links(joints, base, 1) >= 0, at_samples >= 0)  # the same coverage
        _, truth = exact.image_and_links(joints, base)  # (1, 128, 128): the spheres at the finer samples
        fine = coarse.fine_links(joints, base, 2)
        blocky = at_samples.repeat_interleave(2, 1).repeat_interleave(2, 2)
        drawn = truth >= 0
        fine_iou, blocky_iou = (float(((x >= 0) & drawn).sum() / ((x >= 0) | drawn).sum()) for x in (fine, blocky))
        assert fine_iou > 0.95 and fine_iou > blocky_iou + 0.01, (fine_iou, blocky_iou)
        assert ((fine == truth) | ~drawn | (fine < 0)).float().mean() > 0.98  # the link in front, mostly
