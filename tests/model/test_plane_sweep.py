from __future__ import annotations

import math

import pytest
import torch

from aapt_ros.model.camera import RayEncoder
from aapt_ros.model.config import CameraConfig, ConfigError, GeneratorConfig
from aapt_ros.model.plane_sweep import PlaneSweep

# 48x32 pixels, 8-pixel latent cells: a 6x4 latent (non-square catches width/height swaps).
CAMERA = CameraConfig(width=48, height=32, fx=40.0, fy=40.0, cx=23.5, cy=15.5)
DEPTHS = (0.5, 2.0)
# The generator with both warps at planes placed by the arm base: its own plane and the ground.
BOTH_PLANE_WARPS = {
    'sink_ray_origin_scale': 1.0,
    'sink_warp_depths': (1.0,),
    'arm_chain': 'kuka_iiwa',
    'sink_warp_base_plane': True,
    'sink_warp_ground_below_base': 0.3,
}
# The arm base [R | t] in the camera frame: its z axis up (camera -y), 0.5 m below the camera, 1 m ahead.
BASE_BELOW_CAMERA = torch.tensor([[[1.0, 0, 0, 0], [0, 0, -1, 0.5], [0, 1, 0, 1.0]]])


def _warp(rotation: torch.Tensor, translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> a random 3-channel latent and what the current camera sees of it, (1, K, C + 1, h, w)."""
    warp = PlaneSweep(CAMERA, 4, 6, DEPTHS)
    sink = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    out = warp.along_motion(sink, rotation[None], translation[None]).unflatten(1, (len(DEPTHS), 4))
    assert warp.num_channels(3) == 8
    return sink, out


def test_the_sink_seen_from_itself_is_the_sink_at_every_depth() -> None:
    sink, out = _warp(torch.eye(3), torch.zeros(3))
    for k in range(len(DEPTHS)):
        torch.testing.assert_close(out[0, k, :3], sink[0], atol=1e-5, rtol=0)
        assert bool((out[0, k, 3] == 1).all())


def test_a_sideways_step_shifts_the_sink_by_the_parallax_of_each_depth() -> None:
    # One latent cell (8 px) of parallax at 2 m: the camera stepped 8 * 2 / fx metres to its right,
    # so each pixel now shows what the sink's pixel one cell to its right showed.
    step = 8 * DEPTHS[1] / CAMERA.fx
    sink, out = _warp(torch.eye(3), torch.tensor([step, 0.0, 0.0]))
    far = out[0, 1]
    torch.testing.assert_close(far[:3, :, :-1], sink[0, :, :, 1:], atol=1e-5, rtol=0)
    assert bool((far[3, :, :-1] == 1).all()) and bool((far[3, :, -1] == 0).all())
    assert bool((far[:3, :, -1] == 0).all())  # outside the sink image: zeros, flagged invalid
    near = out[0, 0]  # 4 cells of parallax at 0.5 m: only the first two columns still see the sink
    torch.testing.assert_close(near[:3, :, :2], sink[0, :, :, 4:], atol=1e-5, rtol=0)
    assert near[3].sum(dim=0).tolist() == [4.0, 4.0, 0.0, 0.0, 0.0, 0.0]


def test_beyond_its_edges_the_sink_goes_on_as_at_its_nearest_edge() -> None:
    """With beyond_edges, points outside the sink image take its edge pixel's latent (still flagged
    outside); points inside are sampled as ever and points behind its camera stay zero."""
    step = 8 * DEPTHS[1] / CAMERA.fx  # one latent cell of parallax at 2 m, as above
    warp = PlaneSweep(CAMERA, 4, 6, DEPTHS)
    sink = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    motion = (torch.eye(3)[None], torch.tensor([[step, 0.0, 0.0]]))
    inside = warp.along_motion(sink, *motion).unflatten(1, (len(DEPTHS), 4))
    beyond = warp.along_motion(sink, *motion, beyond_edges=True).unflatten(1, (len(DEPTHS), 4))
    torch.testing.assert_close(beyond[:, :, 3], inside[:, :, 3])  # the same validity
    valid = inside[:, :, 3:] == 1
    torch.testing.assert_close(beyond.masked_select(valid), inside.masked_select(valid))
    for k in range(len(DEPTHS)):  # every point outside shows the sink's last column, its nearest edge
        outside = inside[0, k, 3] == 0
        assert bool(outside.any())
        edge = sink[0, :, :, -1:].expand(-1, -1, 6)
        torch.testing.assert_close(beyond[0, k, :3][:, outside], edge[:, outside], atol=1e-5, rtol=0)
    turned = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])[None]  # half a turn about y
    assert bool((warp.along_motion(sink, turned, torch.zeros(1, 3), beyond_edges=True) == 0).all())


def test_points_behind_the_sink_camera_are_invalid() -> None:
    turned = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # half a turn about y
    _, out = _warp(turned, torch.zeros(3))
    assert bool((out == 0).all())


def test_the_sweep_reads_the_motion_from_the_rays_as_from_the_pose() -> None:
    """The generator warps the recycled latent along the rays it is given (in any dtype)."""
    angle = 0.2
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]]
    )[None]
    translation = torch.tensor([[0.05, -0.02, 0.1]])
    warp = PlaneSweep(CAMERA, 4, 6, DEPTHS)
    latent = torch.randn(1, 3, 4, 6)
    rays = RayEncoder(CAMERA, 4, 6, origin_scale=0.05)(rotation, translation)  # origin / 0.05, then R d
    from_rays = warp(latent, rays[:, 3:6], rays[:, 0:3, 0, 0] * 0.05)
    torch.testing.assert_close(from_rays, warp.along_motion(latent, rotation, translation))
    assert 0 < float(from_rays[:, 3::4].mean()) < 1  # some points left the view


@pytest.mark.parametrize(
    ('overrides', 'message'),
    [
        ({'sink_ray_origin_scale': 1.0, 'sink_warp_depths': (1.0, -2.0)}, 'positive and finite'),
        ({'sink_ray_origin_scale': 1.0, 'sink_warp_depths': (math.inf,)}, 'positive and finite'),
        ({'sink_warp_depths': (1.0,)}, 'needs sink rays'),
        ({'previous_warp_depths': (0.0,)}, 'previous_warp_depths must be positive'),
    ],
)
def test_bad_warp_depths_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GeneratorConfig(**overrides)  # type: ignore[arg-type]


def test_a_plane_facing_the_camera_warps_as_the_sweep_at_its_depth() -> None:
    """The arm base's plane, facing the current camera 2 m ahead (its z axis back along the optical
    axis), is the sweep's depth 2 m: the warp at the plane's lengths samples the same points."""
    warp = PlaneSweep(CAMERA, 4, 6, DEPTHS)
    facing = torch.tensor([[[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.0]]])  # x_cam = R x_base + t
    lengths, meets = warp.plane_lengths(facing)
    assert bool(meets.all())
    step = torch.tensor([[0.3, 0.1, -0.2]])
    sink = torch.randn(1, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    at_plane = warp.along_motion(sink, torch.eye(3)[None], step, lengths, meets)  # (1, C + 1, h, w)
    swept = warp.along_motion(sink, torch.eye(3)[None], step).unflatten(1, (len(DEPTHS), 4))[:, 1]
    torch.testing.assert_close(at_plane, swept, atol=1e-5, rtol=0)
    behind = facing.clone()
    behind[0, 2, 3] = -2.0  # the plane behind the camera: no ray meets it, nothing is sampled
    lengths, meets = warp.plane_lengths(behind)
    assert not bool(meets.any())
    assert bool((warp.along_motion(sink, torch.eye(3)[None], step, lengths, meets) == 0).all())


def test_the_generator_warps_the_sink_at_the_arm_base_plane_only_when_the_base_is_known() -> None:
    from aapt_ros.model.generator import CausalGenerator
    from tests.conftest import tiny_config

    config = tiny_config(
        sink_ray_origin_scale=1.0, sink_warp_depths=(1.0,), arm_chain='kuka_iiwa', sink_warp_base_plane=True
    )
    net = CausalGenerator(config)
    offset = net.input_slice('rays').start  # conditioning gives the input from the rays on
    part = slice(net.input_slice('sink_plane_warp').start - offset, net.input_slice('sink_plane_warp').stop - offset)
    assert part.stop - part.start == config.vae.latent_channels + 1
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    sink = torch.randn(1, config.vae.latent_channels, 4, 6)
    rays = net.conditioning(eye, zero, eye, zero, sink, torch.zeros(1, 7), BASE_BELOW_CAMERA)
    warped = rays[:, part]
    assert 0 < warped[0, -1].sum() < warped[0, -1].numel()  # the rays below the horizon meet the plane
    seen = warped[0, -1] == 1
    torch.testing.assert_close(warped[0, :-1][:, seen], sink[0][:, seen], atol=1e-5, rtol=0)  # from the sink itself
    unknown = net.conditioning(eye, zero, eye, zero, sink, torch.zeros(1, 7), torch.zeros(1, 3, 4))
    assert unknown[:, part].abs().sum() == 0
    with pytest.raises(ConfigError, match='sink_warp_base_plane needs a sink warp'):
        GeneratorConfig(sink_ray_origin_scale=1.0, arm_chain='kuka_iiwa', sink_warp_base_plane=True)


def test_the_generator_warps_the_sink_at_the_ground_below_the_arm_base() -> None:
    """The ground d metres below the base is the base's plane moved d down its z axis, warped
    beyond the first frame's edges; an unknown base warps nothing."""
    from aapt_ros.model.generator import CausalGenerator
    from tests.conftest import tiny_config

    config = tiny_config(**BOTH_PLANE_WARPS)
    net = CausalGenerator(config)
    assert net.sink_warp is not None
    offset = net.input_slice('rays').start  # conditioning gives the input from the rays on

    def part(name: str) -> slice:
        where = net.input_slice(name)
        return slice(where.start - offset, where.stop - offset)

    c = config.vae.latent_channels
    assert part('sink_ground_warp').stop - part('sink_ground_warp').start == c + 1
    eye, step = torch.eye(3)[None], torch.tensor([[0.25, 0.1, 0.0]])
    sink = torch.randn(1, c, 4, 6, generator=torch.Generator().manual_seed(2))
    ground = BASE_BELOW_CAMERA.clone()
    ground[0, 1, 3] += 0.3  # 0.3 m further down (camera y is down)
    action = torch.zeros(1, 7)
    at_ground = net.conditioning(eye, step, eye, step, sink, action, BASE_BELOW_CAMERA)[:, part('sink_ground_warp')]
    at_plane = net.conditioning(eye, step, eye, step, sink, action, ground)[:, part('sink_plane_warp')]
    torch.testing.assert_close(at_ground[:, -1], at_plane[:, -1])  # the same points inside the first frame
    inside = at_plane[0, -1] == 1
    assert 0 < int(inside.sum()) < inside.numel()
    lengths, meets = net.sink_warp.plane_lengths(net.base_in_camera(ground, eye, step))
    expected = net.sink_warp.along_motion(sink, eye, step, lengths, meets, beyond_edges=True)
    torch.testing.assert_close(at_ground, expected, atol=1e-5, rtol=0)
    assert at_ground[0, :-1][:, meets[0, 0] & ~inside].abs().sum() > 0  # beyond the edges: the edge latent
    unknown = net.conditioning(eye, step, eye, step, sink, action, torch.zeros(1, 3, 4))
    assert unknown[:, part('sink_ground_warp')].abs().sum() == 0


@pytest.mark.parametrize(
    ('overrides', 'message'),
    [
        (
            {'sink_ray_origin_scale': 1.0, 'arm_chain': 'kuka_iiwa', 'sink_warp_ground_below_base': 0.6},
            'needs a sink warp',
        ),
        (
            {
                'sink_ray_origin_scale': 1.0,
                'sink_warp_depths': (1.0,),
                'arm_chain': 'kuka_iiwa',
                'sink_warp_ground_below_base': -0.6,
            },
            '>= 0 metres',
        ),
        ({'sink_warp_ground_below_base': math.nan}, '>= 0 metres'),
    ],
)
def test_bad_ground_warps_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GeneratorConfig(**overrides)  # type: ignore[arg-type]


def test_the_generator_can_warp_the_sink_image_at_its_planes_and_encode_it() -> None:
    """With sink_warp_pixels the plane warps sample the sink image per pixel and hand the encoder's
    latent of it: seen from the sink itself, each cell on the plane is the encoded sink; cells no
    ray of which meets the plane are zero, and an unknown base warps nothing."""
    from aapt_ros.model.generator import CausalGenerator
    from tests.conftest import tiny_config

    config = tiny_config(**BOTH_PLANE_WARPS, sink_warp_pixels=True)
    net = CausalGenerator(config)
    offset = net.input_slice('rays').start
    plane = slice(net.input_slice('sink_plane_warp').start - offset, net.input_slice('sink_plane_warp').stop - offset)
    c, factor = config.vae.latent_channels, config.vae.spatial_factor

    def encode(images: torch.Tensor) -> torch.Tensor:  # a stand-in autoencoder: the mean colour per cell
        return torch.nn.functional.avg_pool2d(images, factor).repeat(1, 2, 1, 1)[:, :c]

    image = (
        torch.rand(1, 3, config.camera.height, config.camera.width, generator=torch.Generator().manual_seed(3)) * 2 - 1
    )
    sink = encode(image)
    eye, zero, action = torch.eye(3)[None], torch.zeros(1, 3), torch.zeros(1, 7)
    rays = net.conditioning(eye, zero, eye, zero, sink, action, BASE_BELOW_CAMERA, sink_image=image, encode=encode)
    warped = rays[0, plane]
    seen = warped[-1] == 1  # whole cells whose rays all meet the plane
    assert 0 < int(seen.sum()) < seen.numel()
    torch.testing.assert_close(warped[:-1][:, seen], sink[0][:, seen], atol=1e-5, rtol=0)
    assert warped[:-1][:, warped[-1] == 0].abs().sum() == 0  # above the horizon: nothing
    unknown = net.conditioning(
        eye, zero, eye, zero, sink, action, torch.zeros(1, 3, 4), sink_image=image, encode=encode
    )
    assert unknown[:, plane.start :].abs().sum() == 0
    with pytest.raises(ValueError, match='pass sink_image and encode'):
        net.conditioning(eye, zero, eye, zero, sink, action, BASE_BELOW_CAMERA)
    with pytest.raises(ConfigError, match='sink_warp_pixels needs a warp at a plane'):
        GeneratorConfig(
            sink_ray_origin_scale=1.0, sink_warp_depths=(1.0,), arm_chain='kuka_iiwa', sink_warp_pixels=True
        )


def test_the_pixel_warps_say_where_the_first_image_showed_the_arm() -> None:
    """sink_arm_mask draws the arm at frame 0's joints in the sink camera; the plane warps sample it
    with the image, so a light decoder can leave the arm laid flat on a plane alone."""
    from aapt_ros.model.generator import CausalGenerator
    from tests.conftest import tiny_config

    config = tiny_config(**BOTH_PLANE_WARPS, sink_warp_pixels=True)
    net = CausalGenerator(config)
    height, width = config.camera.height, config.camera.width
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(4)) * 2 - 1
    action, eye, zero = torch.zeros(1, 7), torch.eye(3)[None], torch.zeros(1, 3)
    arm = net.sink_arm_mask(action, BASE_BELOW_CAMERA)  # the arm stands up from 1 m ahead
    assert arm.shape == (1, 1, height, width) and 0 < int(arm.sum()) < arm.numel()
    planes = net.sink_plane_images(image, BASE_BELOW_CAMERA, eye, zero, arm)
    for plane in range(2):  # seen from the sink itself, each sampled pixel samples its own
        sampled = planes[0, plane, 3] == 1
        torch.testing.assert_close(planes[0, plane, 5][sampled], arm[0, 0][sampled], atol=1e-4, rtol=0)
        assert planes[0, plane, 5][sampled].sum() > 0
    without = net.sink_plane_images(image, BASE_BELOW_CAMERA, eye, zero)
    assert without[:, :, 5].abs().sum() == 0
    torch.testing.assert_close(without[:, :, :5], planes[:, :, :5])
    assert net.sink_arm_mask(action, torch.zeros(1, 3, 4)).sum() == 0  # an unknown base: no arm


def test_the_arm_warp_takes_each_link_from_where_the_first_image_shows_that_link() -> None:
    """sink_arm_warp moves each drawn point with its link from this frame's joints to frame 0's and
    samples the first image there, where frame 0 shows that link: a first image painted by link
    comes back painted by link, whatever the joints and the camera did since."""
    from aapt_ros.model.generator import CausalGenerator
    from tests.conftest import tiny_config

    config = tiny_config(**BOTH_PLANE_WARPS, sink_warp_pixels=True)
    net = CausalGenerator(config)
    height, width = config.camera.height, config.camera.width
    eye, zero = torch.eye(3)[None], torch.zeros(1, 3)
    first = torch.zeros(1, 7)
    _, links = net.arm_image_and_links(first, BASE_BELOW_CAMERA, eye, zero)
    painted = torch.nn.functional.interpolate((links[:, None] + 1).float(), size=(height, width), mode='nearest')
    image = (painted / 10).expand(-1, 3, -1, -1) - 0.5  # link l + 1 in tenths, -0.5 where no link
    sink_links = net.sink_arm_links(first, BASE_BELOW_CAMERA)
    assert 0 < int((sink_links > 0).sum()) < int((links >= 0).sum())  # the links' rims are left out

    def warp(action: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, base=BASE_BELOW_CAMERA):  # type: ignore[no-untyped-def]
        drawing, now = net.arm_image_and_links(action, base, rotation, translation)
        return net.sink_arm_warp(image, first, sink_links, action, base, rotation, translation, drawing, now), now

    still, _ = warp(first, eye, zero)  # frame 0 itself: each shown pixel is its own
    shown = still[0, 3] == 1
    assert still.shape == (1, 6, height, width) and shown.sum() > 0
    torch.testing.assert_close(still[0, :3][:, shown], image[0][:, shown], atol=1e-4, rtol=0)
    torch.testing.assert_close(still[0, 4], still[0, 3])
    assert still[0, 5].abs().sum() == 0  # no arm mask: the arm is what it copies

    moved_joints = torch.tensor([[0.6, 0.4, 0.0, -0.5, 0.0, 0.3, 0.0]])
    turn = torch.tensor([[[math.cos(0.1), 0.0, math.sin(0.1)], [0.0, 1.0, 0.0], [-math.sin(0.1), 0.0, math.cos(0.1)]]])
    moved, now = warp(moved_joints, turn, torch.tensor([[0.1, 0.0, 0.05]]))
    shown = moved[0, 3] == 1
    assert shown.sum() > 0
    link_now = torch.nn.functional.interpolate((now[:, None] + 1).float(), size=(height, width), mode='nearest')[0, 0]
    same_link = (moved[0, 0][shown] + 0.5 - link_now[shown] / 10).abs() < 1e-3
    assert same_link.float().mean() > 0.9  # bar the pixels between two links' samples
    nothing, _ = warp(moved_joints, turn, zero, torch.zeros(1, 3, 4))  # an unknown base: no arm
    assert nothing.abs().sum() == 0
