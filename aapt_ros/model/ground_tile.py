"""The ground as the first image shows it anywhere on a floor whose texture repeats (a tiled floor).

Why: from about 5 s on, a third of our test pixels is ground that frame 0 does not show (outside
its view, or behind the table), and the plane warps can only hand the light decoder frame 0's
nearest edge pixel or the table in front of it there: v16 drew that ground at 18-19 dB, a third
of its error (docs/training). Our simulator's floor (pybullet's ``plane.urdf``) repeats its
texture every 2 m along the world's x and y axes, as many real floors repeat their tiles; so a
point of the ground that frame 0 does not show has the colour of the points whole periods away
along those axes, and frame 0 shows some of them. Told the period (``vae.fast_decoder_ground_tile``,
a fact of the scene, not learnt), the decoder can copy the floor's pattern where frame 0 never
saw it.

At the start of a stream the first image is folded into one period of the floor, a (T, T) tile:
each texel takes the median colour of frame 0 at its copies on a lattice of (2 REACH + 1)^2
periods around the arm's base, among the copies frame 0 has in view, in front of its camera
within MAX_DEPTH and not on its arm. The median, because frame 0 shows the table or an object in
front of some copies, a minority for most texels. Then, each frame, each pixel's ray meets the
ground (within ``vae.fast_decoder_ground_tile_depth``, a rendered scene's far plane) and the tile
is sampled at that point's place in the period:

    texel of a ground point p = ((p - corner) . x_axis mod period, (p - corner) . y_axis mod period)

On our test episodes the median copy draws the ground frame 0 does not show at 23.9 dB at 5 s,
where v16 drew it at 18.6 dB (exactly visible copies alone: 25.3 dB).

Told the scene's static boxes and a count k (``vae.fast_decoder_ground_tile_nearest``), a texel
takes the median of only its k copies nearest frame 0's camera among those no box stands in front
of: a near copy spans more pixels, so it is drawn sharper, and a copy behind the table is the
table's colour, not the floor's (v25 + k = 3: 0.15 dB more over the test frames at 5 s).

Snapped (``vae.fast_decoder_ground_tile_snap``, ``snap_colours``), the tile holds only the floor's
colours: two where its texels split into two balanced, distinct groups (a checkered floor), else
one. Even the nearest copies are seen from metres away and at a slant, so their median blurs the
pattern's edges, and where frame 0 shows shadows or a table edge on a plain floor the fold repeats
them as streaks over the whole floor (on our validation episodes 0.010 more SSIM at 5 s, 0.065 on
a plain floor).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from aapt_ros.model import static_boxes
from aapt_ros.model.camera import frame_given, points_in_frame
from aapt_ros.model.config import CameraConfig
from aapt_ros.model.plane_sweep import PLANE_IMAGE_CHANNELS, image_grid

TEXELS = 128  # per side of the tile: 1.6 cm a texel for a 2 m period, about a pixel of the ground near the camera
REACH = 3  # periods each way around the arm's base: 7 x 7 copies of each texel, 14 m across for 2 m
# Metres along frame 0's optical axis: farther copies are a few pixels wide, and our recorder
# renders nothing beyond 10 m (frame 0 shows the background there, not the ground).
MAX_DEPTH = 8.0
# Two colours for the floor when the smaller group holds at least this share of the shown texels
# (a checker's holds half; a plain floor's shadows under a fifth on our scenes) ...
SNAP_BALANCE = 0.4
# ... and their colours differ by at least this much (Euclidean, in [-1, 1] units: 30 of 255).
SNAP_SEPARATION = 30 / 127.5
SNAP_ITERATIONS = 10  # of 2-means: the split settles within 3-4 on our tiles


def tile_axes(ground: torch.Tensor, pose_frame: torch.Tensor, period: float) -> torch.Tensor:
    """ground (B, 3, 4): the ground's frame in a camera's (its z = 0 plane; its origin the point
    below the arm's base); pose_frame (B, 3, 4): the frame the poses are given in (whose x and y
    axes the floor's tiles follow), in the same camera's -> float32 (B, 3, 3): as columns, the
    corner of the period that holds the point below the base, and the pose frame's x and y axes."""
    rotation = pose_frame[:, :, :3].float()
    below_base = ground[:, :, 3].float()  # (B, 3)
    in_pose = points_in_frame(pose_frame, below_base)  # (B, 3)
    to_corner = torch.floor(in_pose[:, :2] / period) * period - in_pose[:, :2]  # (B, 2), each in (-period, 0]
    x_axis, y_axis = rotation[:, :, 0], rotation[:, :, 1]
    corner = below_base + to_corner[:, :1] * x_axis + to_corner[:, 1:] * y_axis
    return torch.stack([corner, x_axis, y_axis], dim=2)


def onto_plane(points: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
    """points (B, ..., 3) moved along the normal of plane (B, 3, 4)'s z = 0 onto it: the floor's
    axes lie in the ground unless the arm's base stands tilted."""
    normal, origin = plane[:, :, 2].float(), plane[:, :, 3].float()  # (B, 3)
    shape = (points.shape[0],) + (1,) * (points.dim() - 2) + (3,)
    normal, origin = normal.view(shape), origin.view(shape)
    return points - ((points - origin) * normal).sum(-1, keepdim=True) * normal


def fold_first_image(
    image: torch.Tensor,
    arm: torch.Tensor,
    ground: torch.Tensor,
    pose_frame: torch.Tensor,
    camera: CameraConfig,
    period: float,
    boxes: torch.Tensor | None = None,
    nearest: int = 0,
    snap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first image (B, 3, H, W) in [-1, 1] folded into one period of the floor: float32
    (B, 4, TEXELS + 2, TEXELS + 2), per texel the median colour of its copies frame 0 shows (zero
    where it shows none) and whether it shows any, padded by a texel of the period's other side
    (what ``tile_image`` samples); and the tile's axes (``tile_axes``, (B, 3, 3)).

    arm (B, 1, H, W): where frame 0 shows the arm (``CausalGenerator.sink_arm_mask``); ground and
    pose_frame (B, 3, 4) in frame 0's camera frame, either all zeros when unknown (no texel shown).
    With boxes (K, 6) in the pose frame (``static_boxes``) and nearest > 0, only the copies no box
    hides from frame 0 count, and of those the nearest ``nearest`` to its camera. With snap, the
    texels take the floor's one or two colours (``snap_colours``)."""
    b, k = image.shape[0], 2 * REACH + 1
    axes = tile_axes(ground, pose_frame, period)
    corner, x_axis, y_axis = axes.unbind(dim=2)  # (B, 3) each
    along = ((torch.arange(TEXELS, device=image.device) + 0.5) / TEXELS * period)[None] + (
        torch.arange(-REACH, REACH + 1, device=image.device) * period
    )[:, None]  # (K, T) metres from the corner: period k, texel t
    along = along.flatten()  # (K T): every copy along one axis, laid out period by period
    # The lattice as one image (K T, K T): row = copy along y, column = copy along x.
    points = (
        corner[:, None, None]
        + along[None, None, :, None] * x_axis[:, None, None]
        + along[None, :, None, None] * y_axis[:, None, None]
    )  # (B, K T, K T, 3) in frame 0's camera frame
    points = onto_plane(points, ground)
    grid, in_front = image_grid(points[..., 0], points[..., 1], points[..., 2], camera)
    source = torch.cat([image.float(), arm.float()], dim=1)  # (B, 4, H, W)
    sampled = F.grid_sample(source, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    known = (frame_given(ground) & frame_given(pose_frame))[:, None, None]
    shown = (
        known & in_front & (grid.abs() <= 1).all(dim=-1) & (points[..., 2] <= MAX_DEPTH) & (sampled[:, 3] < 0.5)
    )  # (B, K T, K T)
    if nearest and boxes is not None:
        camera_there = points_in_frame(pose_frame, torch.zeros(b, 3, device=image.device))  # (B, 3)
        hidden = static_boxes.hidden_from(camera_there, points_in_frame(pose_frame, points.permute(0, 3, 1, 2)), boxes)
        shown = shown & ~hidden

    def per_copy(x: torch.Tensor) -> torch.Tensor:  # (B, C, K T, K T) -> (B, C, K K, T, T): copies, then texels
        x = x.view(b, x.shape[1], k, TEXELS, k, TEXELS)
        return x.permute(0, 1, 2, 4, 3, 5).flatten(2, 3)

    colours, shown = per_copy(sampled[:, :3]), per_copy(shown[:, None].float())[:, 0] > 0
    if nearest and boxes is not None:
        depth = per_copy(points[..., 2][:, None])[:, 0]  # (B, K K, T, T) metres along frame 0's axis
        order = torch.where(shown, depth, torch.full_like(depth, torch.inf)).argsort(dim=1)[:, :nearest]
        colours = torch.gather(colours, 2, order[:, None].expand(-1, 3, -1, -1, -1))
        shown = torch.gather(shown, 1, order)
    median = torch.where(shown[:, None], colours, torch.full_like(colours, torch.nan)).nanmedian(dim=2).values
    any_shown = shown.any(dim=1)[:, None]  # (B, 1, T, T)
    tile = torch.cat([torch.where(any_shown, median, torch.zeros_like(median)), any_shown.float()], dim=1)
    if snap:
        tile = snap_colours(tile)
    # Padded once here, so that bilinear sampling blends across the period's edges as the floor does.
    return F.pad(tile, (1, 1, 1, 1), mode='circular'), axes


def snap_colours(tile: torch.Tensor) -> torch.Tensor:
    """A tile (B, 4, T, T) (colour in [-1, 1], whether shown) with each shown texel's colour replaced
    by the nearer of the two medians of a 2-means split of the shown colours (started at the median
    along their principal axis), where the smaller group holds at least SNAP_BALANCE of them and the
    medians differ by SNAP_SEPARATION; else by the median of all. Medians, not means: a few texels
    of table or object survive the fold."""
    b = tile.shape[0]
    colours, shown = tile[:, :3].flatten(2), tile[:, 3].flatten(1) > 0.5  # (B, 3, N), (B, N)

    def medians(groups: torch.Tensor) -> torch.Tensor:  # (B, G, N) bool -> (B, G, 3), NaN for an empty group
        values = torch.where(groups[:, :, None], colours[:, None], torch.full_like(colours[:, None], torch.nan))
        return values.nanmedian(dim=-1).values

    def nearest(centres: torch.Tensor) -> torch.Tensor:  # (B, 2, 3) -> (B, N) long: each texel's group
        return (colours[:, None] - centres[..., None]).square().sum(dim=2).argmin(dim=1)

    one = medians(shown[:, None])  # (B, 1, 3)
    # The split starts at the median along the colours' principal axis: a few texels of table or
    # object far from the floor's colours move the axis little, where they would seed a group.
    weight = shown[:, None].float()
    mean = (colours * weight).sum(dim=2, keepdim=True) / weight.sum(dim=2, keepdim=True).clamp(min=1)
    centred = (colours - mean) * weight
    axis = torch.linalg.eigh(centred @ centred.transpose(1, 2)).eigenvectors[..., -1]  # (B, 3), the largest
    along = (axis[:, :, None] * colours).sum(dim=1)  # (B, N)
    middle = torch.where(shown, along, torch.full_like(along, torch.nan)).nanmedian(dim=1, keepdim=True).values
    upper = along > middle
    centres = medians(torch.stack([~upper & shown, upper & shown], dim=1))  # (B, 2, 3)
    centres = torch.where(centres.isnan(), one.expand(-1, 2, -1), centres)
    groups = torch.arange(2, device=tile.device)[None, :, None]
    for _ in range(SNAP_ITERATIONS):
        update = medians((nearest(centres)[:, None] == groups) & shown[:, None])
        centres = torch.where(update.isnan(), centres, update)
    group = nearest(centres)  # (B, N)
    smaller = ((group[:, None] == groups) & shown[:, None]).sum(dim=-1).amin(dim=-1) / shown.sum(dim=-1).clamp(min=1)
    separation = (centres[:, 0] - centres[:, 1]).norm(dim=-1)
    two = (smaller >= SNAP_BALANCE) & (separation >= SNAP_SEPARATION)  # (B,)
    snapped = torch.where(
        two[:, None, None],
        torch.gather(centres, 1, group[..., None].expand(-1, -1, 3)),
        one.expand(-1, group.shape[1], -1),
    ).transpose(1, 2)  # (B, 3, N)
    snapped = torch.where(shown[:, None], snapped, colours).view(b, 3, *tile.shape[2:])
    return torch.cat([snapped, tile[:, 3:]], dim=1)


def tile_image(
    tile: torch.Tensor, axes: torch.Tensor, period: float, points: torch.Tensor, on_ground: torch.Tensor
) -> torch.Tensor:
    """The padded tile (B, 4, T + 2, T + 2) of ``fold_first_image`` at points (B, 3, H, W), where each pixel's ray
    meets the ground, in frame 0's camera frame, for the pixels on_ground (B, 1, H, W) bool; axes
    (B, 3, 3) and period (metres) as it was folded with -> float32 (B, PLANE_IMAGE_CHANNELS, H, W)
    in the plane warps' layout: the colour (zero where nothing is sampled), whether it was sampled
    and shown (the tile's share of shown texels there), and a zero arm channel (frame 0's arm never
    enters the tile)."""
    corner, x_axis, y_axis = (a[:, :, None, None] for a in axes.unbind(dim=2))  # (B, 3, 1, 1)
    period_texels = tile.shape[-1] - 2
    offset = points.float() - corner
    place = [(offset * axis).sum(1) for axis in (x_axis, y_axis)]  # (B, H, W) metres along each axis
    # Wrapped into the period, then past the padding texel.
    texels = [torch.remainder(p, period) / period * period_texels + 1 for p in place]  # in [1, T + 1)
    size = period_texels + 2
    grid = torch.stack([t / size * 2 - 1 for t in texels], dim=-1)  # (B, H, W, 2), x then y
    sampled = F.grid_sample(tile, grid, mode='bilinear', padding_mode='border', align_corners=False)
    shown = sampled[:, 3:] * on_ground.float()  # (B, 1, H, W)
    # Texels frame 0 shows nowhere are zero: the bilinear weights of the shown ones renormalised.
    colour = torch.where(shown > 0, sampled[:, :3] / sampled[:, 3:].clamp(min=1e-6), torch.zeros_like(sampled[:, :3]))
    image = torch.cat([colour, shown, shown, torch.zeros_like(shown)], dim=1)
    assert image.shape[1] == PLANE_IMAGE_CHANNELS
    return image
