"""The host side of the board link: frame an image, parse the logits and class (see boards.top)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from boards.errors import BoardError
from boards.top import LOGIT_BYTES, MAGIC


class LinkError(BoardError, RuntimeError):
    """The board did not answer, or answered something that is not a reply."""


def load_image(path: str | Path, shape: tuple[int, int, int] = (3, 64, 64)) -> np.ndarray:
    """An image file as a model of input `shape` (C, H, W; grey or RGB) sees it, uint8 HWC: decoded
    and cropped as quant.data's loader does for that shape (3x64x64: the 72-px side, centre crop)."""
    from quant.data import check_image_shape, crop, source_size
    from quant.data import load_image as load_chw

    check_image_shape(shape, path)
    chw = load_chw(Path(path), source_size(shape), int(shape[0]))
    return np.ascontiguousarray(crop(chw[None], tuple(shape))[0].transpose(1, 2, 0))


def encode_request(image: np.ndarray) -> bytes:
    """MAGIC, then the uint8 image in HWC order."""
    if image.dtype != np.uint8:
        raise ValueError(f"the image must be uint8, got {image.dtype}")
    return bytes([MAGIC]) + image.tobytes(order="C")


def reply_size(num_classes: int) -> int:
    return num_classes * LOGIT_BYTES + 1


def decode_reply(data: bytes, num_classes: int) -> tuple[np.ndarray, int]:
    """(logits int64, class) from the board's reply; checks the class byte against the logits."""
    if len(data) != reply_size(num_classes):
        raise LinkError(f"expected {reply_size(num_classes)} reply bytes, got {len(data)}; "
                        f"is the board running a bitstream for {num_classes} classes?")
    logits = np.array(struct.unpack(f"<{num_classes}i", data[:-1]), dtype=np.int64)
    cls = data[-1]
    if cls != int(np.argmax(logits)):
        raise LinkError(f"the class byte {cls} is not the argmax {int(np.argmax(logits))} of the logits {logits.tolist()}")
    return logits, cls


def check_link(baud: int, timeout_s: float) -> None:
    """Refuse a baud rate or a timeout the serial port cannot be opened with."""
    if baud <= 0 or not 0 < timeout_s < math.inf:
        raise BoardError(f"--baud {baud} / --timeout {timeout_s:g}: the baud rate must be a positive whole number, "
                         "the timeout a positive number of seconds")


def classify(port: str, image: np.ndarray, num_classes: int, baud: int, timeout_s: float = 10.0
             ) -> tuple[np.ndarray, int]:
    """Send one image over the serial port and wait for the board's logits and class; the write
    and the reply each wait at most `timeout_s`."""
    import serial

    check_link(baud, timeout_s)
    try:
        with serial.serial_for_url(port, baudrate=baud, timeout=timeout_s, write_timeout=timeout_s) as link:
            link.reset_input_buffer()
            link.write(encode_request(image))
            link.flush()
            data = link.read(reply_size(num_classes))
    except serial.SerialTimeoutException:
        raise LinkError(f"{port}: the image was not sent within {timeout_s:g} s; is the board connected and the port "
                        "the board's?") from None
    except (serial.SerialException, ValueError) as e:  # ValueError: a setting the port refuses
        raise LinkError(f"{port}: {e}") from None
    if not data:
        raise LinkError(f"{port}: no reply within {timeout_s:g} s; is the bitstream loaded and the baud rate {baud}?")
    return decode_reply(data, num_classes)


__all__ = ["LinkError", "check_link", "classify", "decode_reply", "encode_request", "load_image", "reply_size"]
