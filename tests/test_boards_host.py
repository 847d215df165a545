"""`python -m boards classify` against a board stand-in on a pseudo-terminal, and its errors."""

import os
import pty
import threading

import numpy as np
import pytest
from PIL import Image

from boards.__main__ import main
from boards.host import decode_reply, encode_request, load_image, reply_size
from boards.top import MAGIC
from export import reference
from export.plan import IntType, Layer, Plan


def small_plan() -> Plan:
    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, size=(4, 12)).astype(np.int8)
    img = IntType(8, False, -8)
    layers = [Layer("flatten", "flatten", (3, 2, 2), (12,), img, img),
              Layer("fc", "linear", (12,), (4,), img, None, weight=w, bias=rng.integers(-50, 50, 4).astype(np.int64),
                    w_type=IntType(4, True, -3))]
    return Plan((3, 2, 2), img, layers, ["cat", "cow", "horse", "sheep"])


def fake_board(fd: int, plan: Plan) -> None:
    """Reads one request like the board top does and answers with the reference logits."""
    n = int(np.prod(plan.input_shape))
    buf = b""
    while len(buf) < n + 1:
        buf += os.read(fd, 4096)
    assert buf[0] == MAGIC
    hwc = np.frombuffer(buf[1:n + 1], dtype=np.uint8).reshape(plan.input_shape[1], plan.input_shape[2], 3)
    logits = reference.logits(plan, hwc.transpose(2, 0, 1))
    os.write(fd, logits.astype("<i4").tobytes() + bytes([int(np.argmax(logits))]))


def test_classify_prints_the_boards_logits_and_class(tmp_path, capsys, monkeypatch):
    import boards.host

    plan = small_plan()
    plan.save(tmp_path / "plan")
    image = np.random.default_rng(0).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    monkeypatch.setattr(boards.host, "load_image", lambda path, shape: image)
    master, slave = pty.openpty()
    board = threading.Thread(target=fake_board, args=(master, plan), daemon=True)
    board.start()
    rc = main(["classify", "--port", os.ttyname(slave), str(tmp_path / "x.png"), "--plan", str(tmp_path / "plan.json"),
               "--timeout", "5"])
    board.join(5)
    out = capsys.readouterr().out
    expected = reference.logits(plan, image.transpose(2, 0, 1))
    assert rc == 0
    assert f"class: {plan.class_names[int(np.argmax(expected))]}" in out
    for v in expected:
        assert f" {int(v)} " in out


def test_classify_errors_are_one_line(tmp_path, capsys):
    assert main(["classify", "--port", "loop://", str(tmp_path / "x.png"), "--plan", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no plan" in err
    small_plan().save(tmp_path / "plan")
    (tmp_path / "x.png").write_bytes(b"not an image")
    assert main(["classify", "--port", "loop://", str(tmp_path / "x.png"), "--plan", str(tmp_path / "plan.json")]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_a_silent_port_times_out_with_advice(tmp_path):
    from boards.host import LinkError, classify

    master, slave = pty.openpty()
    with pytest.raises(LinkError, match="no reply within 0.2 s"):
        classify(os.ttyname(slave), np.zeros((2, 2, 3), np.uint8), 4, 115200, timeout_s=0.2)


def test_a_stalled_write_times_out():
    from boards.host import LinkError, classify

    master, slave = pty.openpty()  # nothing reads the other end: the write stalls once its buffer is full
    raised = []

    def send():
        with pytest.raises(LinkError, match="the image was not sent within 0.5 s") as e:
            classify(os.ttyname(slave), np.zeros((512, 512, 3), np.uint8), 4, 115200, timeout_s=0.5)
        raised.append(e)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(10)
    assert raised, "the write is still blocked"


@pytest.mark.parametrize("option, value", [("--baud", "0"), ("--timeout", "-1"), ("--timeout", "nan")])
def test_bad_link_options_are_one_line_before_the_plan_is_read(tmp_path, capsys, option, value):
    assert main(["classify", "--port", "loop://", str(tmp_path / "x.png"), "--plan", str(tmp_path / "plan.json"),
                 option, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the baud rate must be a positive whole number" in err, err


def test_load_image_crops_like_the_training_data(tmp_path):
    Image.fromarray(np.full((90, 120, 3), 7, np.uint8)).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and (img == 7).all()
    assert encode_request(img)[0] == MAGIC and len(encode_request(img)) == 1 + 64 * 64 * 3
    assert reply_size(5) == 21 and decode_reply(bytes(20) + b"\0", 5)[1] == 0
    grey = load_image(tmp_path / "a.png", (1, 28, 20))
    assert grey.shape == (28, 20, 1) and (grey == 7).all()
