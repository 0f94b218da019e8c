"""What frame 0 shows standing on the static boxes' tops (the objects on a table), copied into each frame.

Why: the light decoder copies the table top from frame 0 through the table plane's warp, which lays
every object flat on the top: a 5 cm cube's copy slides across the table as the camera moves, and
the decoder, unable to tell it from a good copy, blurs it (v30's objects at 18 dB and 0.01 of the
SSIM lost at 5 s on 2 % of the pixels; docs/training, "Frame 0's objects stood up"). The objects'
shapes are unknown, but they stand on the top: drawn on a plane ``RAISE`` above it, half a typical
object's height, they stay within a pixel or two of where they are.

Which of frame 0's pixels on a top are objects: the top is one material, lit by a distant light,
so the pixels whose colour is the top's median colour scaled by ``SHADE`` (its shadows and
highlights), within ``TINT_DISTANCE``, are the top; the rest, minus the arm and ``ARM_MARGIN``
around it, a rim of ``EDGE`` along the top's outline and specks an opening of ``OPENING``
removes (the top's texture where it is seen from afar), are objects.

At the start (``first_image_objects``) the pixels are taken ``UPSAMPLING`` times finer, so that
splatting them into a frame the camera nears leaves no holes; each frame (``splat``) they are
projected into the camera, the nearest per pixel kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from aapt_ros.model import static_boxes
from aapt_ros.model.camera import directions_in_frame, frame_given, latent_ray_directions, points_in_frame
from aapt_ros.model.config import CameraConfig

UPSAMPLING = 2  # frame 0's pixels taken this many times finer per side
RAISE = 0.03  # metres above the top: where the objects are drawn
TINT_DISTANCE = 25 / 255  # how far off the top's colour direction a pixel of the top may be (0..1 units)
SHADE = (0.6, 1.2)  # the brightness of the top's pixels, relative to its median colour
EDGE = 2  # fine pixels along the top's outline that are never objects (its edge mixes with what is behind)
OPENING = 5  # fine pixels: object masks thinner than this are the top's texture
NEAR = 0.05  # metres: points nearer the camera than this are not drawn
# Pixels around frame 0's drawn arm (the engine's, grown by one) that are never objects: the drawn
# spheres only approximate the links (IoU 0.87 with the render) and can miss a link's edge by more
# than a pixel, and a piece of arm pasted on the table would follow the camera as an object.
ARM_MARGIN = 3
MIN_TOP_PIXELS = 16  # fine pixels of the top frame 0 must show for its colour to count


def _erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    return -F.max_pool2d(-mask, size, stride=1, padding=size // 2)


def _dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    return F.max_pool2d(mask, size, stride=1, padding=size // 2)


def first_image_objects(
    image: torch.Tensor, arm: torch.Tensor, pose_frame: torch.Tensor, boxes: torch.Tensor, camera: CameraConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0's objects on the boxes' tops as points: image (B, 3, H, W) in [-1, 1], arm (B, 1, H, W)
    where it shows the arm, pose_frame (B, 3, 4) the boxes' frame in its camera (all zero: unknown),
    boxes (K, 6) -> float32 (B, 3, N) the points in frame 0's camera frame, N = H W UPSAMPLING^2, and
    (B, 4, N) their colour in [-1, 1] and whether each is an object (0 for every point of a stream
    whose top frame 0 does not show, or whose pose frame is unknown)."""
    b, _, h, w = image.shape
    fine_h, fine_w = h * UPSAMPLING, w * UPSAMPLING
    rays = latent_ray_directions(camera, fine_h, fine_w).to(image.device, torch.float32)  # (3, h', w') unit
    rays = rays.expand(b, 3, fine_h, fine_w)
    origin = points_in_frame(pose_frame, torch.zeros(b, 3, 1, 1, device=image.device))  # (B, 3, 1, 1)
    directions = directions_in_frame(pose_frame, rays)  # (B, 3, h', w') in the boxes' frame
    lengths, faces = static_boxes.first_entry_faces(origin, directions, boxes)  # (B, h', w')
    on_top = ((faces == static_boxes.TOP_FACE) & frame_given(pose_frame)[:, None, None])[:, None].float()
    fine = F.interpolate(image.float(), size=(fine_h, fine_w), mode='bilinear', align_corners=False)
    grown = _dilate(arm.float(), 2 * ARM_MARGIN + 1)
    fine_arm = F.interpolate(grown, size=(fine_h, fine_w), mode='nearest') > 0.5
    colour = (fine + 1) / 2  # (B, 3, h', w') in 0..1
    shown = (on_top > 0.5) & ~fine_arm
    pixels = torch.where(shown, colour, torch.full_like(colour, torch.nan)).flatten(2)
    top = pixels.nanmedian(dim=-1).values.nan_to_num(0.0)  # (B, 3) the top's colour
    enough = shown.flatten(1).sum(1) >= MIN_TOP_PIXELS  # (B,)
    brightness = top.norm(dim=1).clamp(min=1e-6)  # (B,)
    tint = (top / brightness[:, None])[:, :, None, None]  # (B, 3, 1, 1) unit
    along = (colour * tint).sum(1, keepdim=True)  # (B, 1, h', w')
    off_tint = (colour - along * tint).norm(dim=1, keepdim=True)
    relative = along / brightness[:, None, None, None]
    like_top = (off_tint < TINT_DISTANCE) & (relative > SHADE[0]) & (relative < SHADE[1])
    inner = _erode(on_top, 2 * EDGE + 1) > 0.5
    objects = (inner & ~like_top & ~fine_arm).float()
    objects = _dilate(_erode(objects, OPENING), OPENING) * inner.float()  # the opening, kept off the rim
    objects = objects * enough[:, None, None, None].float()
    # Where the ray is RAISE above the top it entered: the top's up is the boxes' frame's z.
    up = -directions[:, 2:3]  # (B, 1, h', w') how fast the ray descends, per metre
    raised = lengths[:, None] - RAISE / up.clamp(min=1e-6)
    objects = objects * (raised > NEAR).float()
    # (B, 3, h', w') in frame 0's camera frame; zero where no object (rays that meet no top run to infinity)
    points = torch.where(objects > 0.5, raised.clamp(min=NEAR) * rays, torch.zeros_like(rays))
    return points.flatten(2), torch.cat([fine, objects], dim=1).flatten(2)


def splat(
    points: torch.Tensor,
    colours: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    camera: CameraConfig,
) -> torch.Tensor:
    """``first_image_objects``' points (B, 3, N) and colours (B, 4, N) drawn into the camera at
    (rotation (B, 3, 3), translation (B, 3)) in frame 0's camera frame: float32 (B, 4, H, W), the
    colour of the nearest object point in each pixel (their mean where several are as near) and
    whether one is there."""
    b, n = points.shape[0], points.shape[2]
    h, w = camera.height, camera.width
    local = rotation.float().transpose(1, 2) @ (points - translation.float()[:, :, None])  # (B, 3, N)
    depth = local[:, 2]
    safe = depth.clamp(min=NEAR)
    u = torch.round(camera.fx * local[:, 0] / safe + camera.cx)
    v = torch.round(camera.fy * local[:, 1] / safe + camera.cy)
    drawn = (colours[:, 3] > 0.5) & (depth > NEAR) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    # Points not drawn go to one spare slot past the image, so every shape is fixed (a CUDA graph's).
    index = torch.where(drawn, v * w + u, torch.full_like(u, h * w)).long()  # (B, N)
    far = torch.where(drawn, depth, torch.full_like(depth, torch.inf))
    nearest = torch.full((b, h * w + 1), torch.inf, device=points.device).scatter_reduce(
        1, index, far, reduce='amin', include_self=True
    )
    front = (drawn & (far <= nearest.gather(1, index))).float()  # (B, N)
    sums = torch.zeros(b, 4, h * w + 1, device=points.device)
    weighted = torch.cat([colours[:, :3] * front[:, None], front[:, None]], dim=1)  # (B, 4, N)
    sums = sums.scatter_add(2, index[:, None].expand(b, 4, n), weighted)[:, :, : h * w]
    count = sums[:, 3:]
    image = sums[:, :3] / count.clamp(min=1)
    return torch.cat([image, (count > 0).float()], dim=1).view(b, 4, h, w)
