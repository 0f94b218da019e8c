"""Tests for aapt_ros.node.image_conversion.

The reference is rosbags-image (``message_to_cvimage``), an implementation independent of ours
that works on rosbags messages. Messages go from rclpy to rosbags through a CDR round trip
(``rclpy.serialization`` then the rosbags typestore), which also proves our messages serialise.
rosbags-image ignores ``step`` (it reads ``data`` as unpadded rows), so padded messages are
given to it with the padding cut out by a plain per-row slice.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from builtin_interfaces.msg import Time  # type: ignore[import-untyped]
from rclpy.serialization import serialize_message
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image  # type: ignore[import-untyped]
from std_msgs.msg import Header  # type: ignore[import-untyped]

from aapt_ros.node import image_conversion
from aapt_ros.node.image_conversion import (
    COLOUR_ENCODINGS,
    PIXEL_LAYOUTS,
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    array_to_image_msg,
    compressed_msg_to_rgb8,
    image_msg_to_array,
    image_msg_to_rgb8,
    rgb8_to_compressed_msg,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
HOST_IS_BIGENDIAN = sys.byteorder == 'big'
SIZES = [(7, 5), (120, 160)]  # (height, width): odd widths, and a small camera frame
PADDINGS = [0, 1, 8]  # bytes after each row; 1 makes 16UC1/32FC1 rows unaligned
MULTIBYTE_ENCODINGS = [e for e in SUPPORTED_ENCODINGS if PIXEL_LAYOUTS[e].dtype.itemsize > 1]
DEPTH_ENCODINGS = [e for e in SUPPORTED_ENCODINGS if e not in COLOUR_ENCODINGS]


def random_pixels(encoding: str, height: int, width: int, seed: int = 0) -> npt.NDArray[Any]:
    """Return random pixels for ``encoding``: (H, W, C), or (H, W) for one channel."""
    layout = PIXEL_LAYOUTS[encoding]
    rng = np.random.default_rng(seed)
    shape: tuple[int, ...] = (height, width, layout.channels)
    if layout.channels == 1:
        shape = (height, width)
    if layout.dtype.kind == 'f':
        pixels = rng.normal(2.0, 3.0, shape).astype(layout.dtype)
        pixels.flat[::7] = np.nan  # depth images mark invalid pixels with NaN
        return pixels
    return rng.integers(0, np.iinfo(layout.dtype).max, shape, dtype=layout.dtype, endpoint=True)


def make_msg(pixels: npt.NDArray[Any], encoding: str, *, padding: int = 0, bigendian: bool = False) -> Image:
    """Build an rclpy Image by hand: rows in the given byte order, each followed by junk bytes."""
    stored = pixels.astype(pixels.dtype.newbyteorder('>' if bigendian else '<'))
    rows = [row.tobytes() + b'\xab' * padding for row in stored]
    msg = Image(
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=len(rows[0]),
    )
    msg.data.frombytes(b''.join(rows))
    return msg


def to_rosbags(msg: Image | CompressedImage) -> Any:
    """Convert an rclpy message to the rosbags message through CDR bytes."""
    typename = 'sensor_msgs/msg/' + type(msg).__name__
    return TYPESTORE.deserialize_cdr(serialize_message(msg), typename)


def rosbags_reference(msg: Image, color_space: str | None = None) -> npt.NDArray[Any]:
    """Convert with rosbags-image after cutting out row padding, which it does not handle."""
    bag_msg = to_rosbags(msg)
    layout = PIXEL_LAYOUTS[msg.encoding]
    row_bytes = msg.width * layout.pixel_bytes
    raw = bytes(bag_msg.data)
    rows = [raw[r * msg.step : r * msg.step + row_bytes] for r in range(msg.height)]
    unpadded = dataclasses.replace(bag_msg, step=row_bytes, data=np.frombuffer(b''.join(rows), np.uint8))
    return np.asarray(message_to_cvimage(unpadded, color_space))


def re_shape(shape: tuple[int, ...]) -> str:
    """Escape a shape tuple's repr for a regular expression."""
    return repr(shape).replace('(', r'\(').replace(')', r'\)')


@pytest.fixture(autouse=True)
def _numpy_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test our implementation even on machines where cv_bridge is installed."""
    monkeypatch.setattr(image_conversion, '_CV_BRIDGE', None)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(('height', 'width'), SIZES)
@pytest.mark.parametrize('padding', PADDINGS)
@pytest.mark.parametrize('bigendian', [False, True])
def test_image_msg_to_array_matches_rosbags_image_for_padded_and_byte_ordered_messages(
    encoding: str, height: int, width: int, padding: int, bigendian: bool
) -> None:
    pixels = random_pixels(encoding, height, width)
    msg = make_msg(pixels, encoding, padding=padding, bigendian=bigendian)

    result = image_msg_to_array(msg)

    assert result.dtype == PIXEL_LAYOUTS[encoding].dtype  # host byte order
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, pixels)
    np.testing.assert_array_equal(result, rosbags_reference(msg))


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize('padding', [0, 8])
def test_image_msg_to_array_reads_rosbags_messages_whose_data_is_an_ndarray(encoding: str, padding: int) -> None:
    pixels = random_pixels(encoding, 7, 5)
    bag_msg = to_rosbags(make_msg(pixels, encoding, padding=padding, bigendian=HOST_IS_BIGENDIAN))

    np.testing.assert_array_equal(image_msg_to_array(bag_msg), pixels)


def test_image_msg_to_array_of_host_order_data_is_a_view_of_the_message() -> None:
    pixels = random_pixels('rgb8', 7, 5)
    msg = make_msg(pixels, 'rgb8', padding=3)

    result = image_msg_to_array(msg)

    assert np.shares_memory(result, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('encoding', MULTIBYTE_ENCODINGS)
def test_image_msg_to_array_copies_byte_swapped_data_into_a_native_array(encoding: str) -> None:
    pixels = random_pixels(encoding, 7, 5)
    msg = make_msg(pixels, encoding, bigendian=not HOST_IS_BIGENDIAN)

    result = image_msg_to_array(msg)

    assert not np.shares_memory(result, np.frombuffer(msg.data, np.uint8))
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, pixels)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(('height', 'width'), SIZES)
def test_array_to_image_msg_round_trips_through_cdr_and_rosbags_image(encoding: str, height: int, width: int) -> None:
    pixels = random_pixels(encoding, height, width, seed=1)
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id='camera_optical_frame')

    msg = array_to_image_msg(pixels, encoding, header=header)

    layout = PIXEL_LAYOUTS[encoding]
    assert (msg.height, msg.width, msg.encoding) == (height, width, encoding)
    assert msg.step == width * layout.channels * layout.dtype.itemsize
    assert msg.is_bigendian == int(HOST_IS_BIGENDIAN)
    assert len(msg.data) == msg.step * height
    assert msg.header == header
    np.testing.assert_array_equal(image_msg_to_array(msg), pixels)
    np.testing.assert_array_equal(rosbags_reference(msg), pixels)


def test_array_to_image_msg_leaves_a_default_header_when_none_is_given() -> None:
    msg = array_to_image_msg(random_pixels('mono8', 7, 5), 'mono8')

    assert msg.header == Header()


def test_array_to_image_msg_accepts_single_channel_arrays_with_a_channel_axis() -> None:
    pixels = random_pixels('16UC1', 7, 5)

    msg = array_to_image_msg(pixels[:, :, None], '16UC1')

    np.testing.assert_array_equal(image_msg_to_array(msg), pixels)


def test_array_to_image_msg_accepts_non_contiguous_and_byte_swapped_arrays() -> None:
    pixels = random_pixels('32FC1', 8, 10)
    strided = pixels[::2, ::2]
    swapped = strided.astype(strided.dtype.newbyteorder('S'))

    msg = array_to_image_msg(swapped, '32FC1')

    assert msg.is_bigendian == int(HOST_IS_BIGENDIAN)
    np.testing.assert_array_equal(image_msg_to_array(msg), strided)


@pytest.mark.parametrize('encoding', COLOUR_ENCODINGS)
@pytest.mark.parametrize('padding', [0, 1, 8])
def test_image_msg_to_rgb8_matches_rosbags_image_colour_conversion(encoding: str, padding: int) -> None:
    msg = make_msg(random_pixels(encoding, 120, 160), encoding, padding=padding)

    rgb = image_msg_to_rgb8(msg)

    assert rgb.shape == (120, 160, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous
    assert rgb.flags.writeable
    assert not np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(rgb, rosbags_reference(msg, 'rgb8'))


def test_image_msg_to_rgb8_swaps_bgr_channels() -> None:
    msg = array_to_image_msg(np.array([[[1, 2, 3]]], np.uint8), 'bgr8')

    np.testing.assert_array_equal(image_msg_to_rgb8(msg), [[[3, 2, 1]]])


@pytest.mark.parametrize('encoding', DEPTH_ENCODINGS)
def test_image_msg_to_rgb8_rejects_depth_images(encoding: str) -> None:
    msg = array_to_image_msg(random_pixels(encoding, 7, 5), encoding)

    with pytest.raises(ImageConversionError, match=f"colour image is required.*'{encoding}'"):
        image_msg_to_rgb8(msg)


def test_image_msg_to_rgb8_rejects_unsupported_encodings() -> None:
    msg = make_msg(random_pixels('mono8', 7, 5), 'yuv422')

    with pytest.raises(ImageConversionError, match="Unsupported image encoding 'yuv422'"):
        image_msg_to_rgb8(msg)


def test_image_msg_to_array_rejects_unknown_encodings_naming_the_supported_ones() -> None:
    msg = make_msg(random_pixels('mono8', 7, 5), 'mono7')

    with pytest.raises(ImageConversionError, match=r"'mono7'.*rgb8, bgr8.*16UC1, 32FC1"):
        image_msg_to_array(msg)


@pytest.mark.parametrize(('height', 'width'), [(0, 5), (7, 0)])
def test_image_msg_to_array_rejects_zero_sized_images(height: int, width: int) -> None:
    msg = Image(height=height, width=width, encoding='mono8', step=width)

    with pytest.raises(ImageConversionError, match=rf'zero size \({width}x{height}\)'):
        image_msg_to_array(msg)


def test_image_msg_to_array_rejects_a_step_shorter_than_a_row() -> None:
    msg = make_msg(random_pixels('rgb8', 7, 5), 'rgb8')
    msg.step = 14

    with pytest.raises(ImageConversionError, match=r'step 14 .* 5 .* \(15 bytes\)'):
        image_msg_to_array(msg)


def test_image_msg_to_array_rejects_data_shorter_than_step_times_height() -> None:
    msg = make_msg(random_pixels('16UC1', 7, 5), '16UC1', padding=2)
    del msg.data[-1]

    with pytest.raises(ImageConversionError, match=r'83 bytes .* 12 \* 7 = 84'):
        image_msg_to_array(msg)


def test_image_msg_to_array_ignores_bytes_beyond_step_times_height() -> None:
    pixels = random_pixels('mono8', 7, 5)
    msg = make_msg(pixels, 'mono8')
    msg.data.frombytes(b'\xff' * 3)

    np.testing.assert_array_equal(image_msg_to_array(msg), pixels)


def test_array_to_image_msg_rejects_unknown_encodings() -> None:
    with pytest.raises(ImageConversionError, match="Unsupported image encoding 'RGB'"):
        array_to_image_msg(random_pixels('rgb8', 7, 5), 'RGB')


@pytest.mark.parametrize(
    ('dtype', 'encoding'),
    [(np.float32, 'rgb8'), (np.uint8, '16UC1'), (np.float64, '32FC1'), (np.int16, '16UC1')],
)
def test_array_to_image_msg_rejects_a_dtype_that_does_not_fit_the_encoding(
    dtype: type[np.generic], encoding: str
) -> None:
    array = np.zeros((7, 5, PIXEL_LAYOUTS[encoding].channels), dtype)

    with pytest.raises(ImageConversionError, match=f"dtype {np.dtype(dtype)} .*'{encoding}'"):
        array_to_image_msg(array, encoding)


@pytest.mark.parametrize(
    ('shape', 'encoding', 'expected'),
    [
        ((7, 5), 'rgb8', r'\(H, W, 3\)'),
        ((7, 5, 4), 'bgr8', r'\(H, W, 3\)'),
        ((7, 5, 3), 'mono8', r'\(H, W\) or \(H, W, 1\)'),
        ((7,), 'mono8', r'\(H, W\) or \(H, W, 1\)'),
        ((2, 7, 5, 3), 'rgb8', r'\(H, W, 3\)'),
    ],
)
def test_array_to_image_msg_rejects_a_shape_that_does_not_fit_the_encoding(
    shape: tuple[int, ...], encoding: str, expected: str
) -> None:
    array = np.zeros(shape, np.uint8)

    with pytest.raises(ImageConversionError, match=rf'shape {re_shape(shape)} .*{expected}'):
        array_to_image_msg(array, encoding)


@pytest.mark.parametrize('shape', [(0, 5, 3), (7, 0, 3)])
def test_array_to_image_msg_rejects_zero_sized_arrays(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageConversionError, match=rf'{re_shape(shape)} has zero size'):
        array_to_image_msg(np.zeros(shape, np.uint8), 'rgb8')


def smooth_rgb(height: int = 120, width: int = 160) -> npt.NDArray[np.uint8]:
    """Return a smooth colour test pattern, which JPEG reproduces closely."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


def test_png_compressed_image_round_trips_exactly() -> None:
    rgb = random_pixels('rgb8', 120, 160)

    msg = rgb8_to_compressed_msg(rgb, fmt='png')

    assert msg.format == 'rgb8; png compressed bgr8'
    np.testing.assert_array_equal(compressed_msg_to_rgb8(msg), rgb)
    np.testing.assert_array_equal(message_to_cvimage(to_rosbags(msg), 'rgb8'), rgb)


def test_jpeg_compressed_image_round_trips_closely() -> None:
    rgb = smooth_rgb()
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id='camera_optical_frame')

    msg = rgb8_to_compressed_msg(rgb, header=header, quality=95)

    assert msg.format == 'rgb8; jpeg compressed bgr8'
    assert msg.header == header
    decoded = compressed_msg_to_rgb8(msg)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(np.int16) - rgb).mean() < 2.0
    np.testing.assert_array_equal(message_to_cvimage(to_rosbags(msg), 'rgb8'), decoded)


def test_jpeg_quality_trades_size_for_error() -> None:
    rgb = smooth_rgb()

    low, high = (rgb8_to_compressed_msg(rgb, quality=q) for q in (10, 95))

    def error(msg: CompressedImage) -> float:
        return float(np.abs(compressed_msg_to_rgb8(msg).astype(np.int16) - rgb).mean())

    assert len(low.data) < len(high.data)
    assert error(low) > error(high)


def test_compressed_msg_to_rgb8_decodes_grey_images_into_three_equal_channels() -> None:
    grey = random_pixels('mono8', 7, 5)
    msg = rgb8_to_compressed_msg(np.repeat(grey[:, :, None], 3, axis=2), fmt='png')

    np.testing.assert_array_equal(compressed_msg_to_rgb8(msg), np.dstack([grey] * 3))


@pytest.mark.parametrize(
    'array',
    [
        np.zeros((7, 5), np.uint8),
        np.zeros((7, 5, 4), np.uint8),
        np.zeros((7, 5, 3), np.uint16),
        np.zeros((0, 5, 3), np.uint8),
    ],
)
def test_rgb8_to_compressed_msg_rejects_anything_but_an_rgb8_array(
    array: npt.NDArray[Any],
) -> None:
    with pytest.raises(ImageConversionError, match=rf'\(H, W, 3\) uint8 .*{re_shape(array.shape)}'):
        rgb8_to_compressed_msg(array)


def test_rgb8_to_compressed_msg_rejects_unknown_formats() -> None:
    with pytest.raises(ImageConversionError, match=r"format 'webp'.*jpeg, png"):
        rgb8_to_compressed_msg(smooth_rgb(), fmt='webp')  # type: ignore[arg-type]


@pytest.mark.parametrize('quality', [0, 101])
def test_rgb8_to_compressed_msg_rejects_jpeg_quality_out_of_range(quality: int) -> None:
    with pytest.raises(ImageConversionError, match=f'quality {quality} .*1..100'):
        rgb8_to_compressed_msg(smooth_rgb(), quality=quality)


def test_compressed_msg_to_rgb8_rejects_empty_data() -> None:
    with pytest.raises(ImageConversionError, match=r"format 'jpeg'.* no data"):
        compressed_msg_to_rgb8(CompressedImage(format='jpeg'))


def test_compressed_msg_to_rgb8_rejects_data_that_is_not_an_image() -> None:
    msg = CompressedImage(format='rgb8; jpeg compressed bgr8')
    msg.data.frombytes(b'not a jpeg')

    with pytest.raises(ImageConversionError, match=r"decode 10 bytes .*'rgb8; jpeg compressed"):
        compressed_msg_to_rgb8(msg)


class FakeBridge:
    """Stands in for cv_bridge.CvBridge and records which messages it converted."""

    def __init__(self) -> None:
        self.converted: list[Image] = []

    def imgmsg_to_cv2(self, msg: Image, desired_encoding: str) -> npt.NDArray[Any]:
        assert desired_encoding == 'passthrough'
        self.converted.append(msg)
        return np.zeros((msg.height, msg.width), np.uint16)


@pytest.mark.parametrize(
    ('encoding', 'padding', 'bigendian', 'uses_bridge'),
    [
        ('16UC1', 0, HOST_IS_BIGENDIAN, True),
        ('16UC1', 4, HOST_IS_BIGENDIAN, True),  # two whole pixels of padding
        ('16UC1', 1, HOST_IS_BIGENDIAN, False),  # cv_bridge reads step as a pixel count
        ('16UC1', 0, not HOST_IS_BIGENDIAN, False),  # cv_bridge's byte swap fails on NumPy 2
        ('mono8', 0, not HOST_IS_BIGENDIAN, False),  # it tries to swap one-byte samples too
    ],
)
def test_image_msg_to_array_uses_cv_bridge_only_where_it_is_correct(
    monkeypatch: pytest.MonkeyPatch, encoding: str, padding: int, bigendian: bool, uses_bridge: bool
) -> None:
    bridge = FakeBridge()
    monkeypatch.setattr(image_conversion, '_CV_BRIDGE', bridge)
    pixels = random_pixels(encoding, 7, 5) | 1  # never zero, unlike the fake bridge's output
    msg = make_msg(pixels, encoding, padding=padding, bigendian=bigendian)

    result = image_msg_to_array(msg)

    assert bridge.converted == ([msg] if uses_bridge else [])
    assert not result.any() if uses_bridge else np.array_equal(result, pixels)


def test_image_msg_to_array_validates_before_calling_cv_bridge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = FakeBridge()
    monkeypatch.setattr(image_conversion, '_CV_BRIDGE', bridge)
    msg = make_msg(random_pixels('16UC1', 7, 5), '16UC1')
    msg.step = 4

    with pytest.raises(ImageConversionError, match='step 4'):
        image_msg_to_array(msg)
    assert bridge.converted == []
