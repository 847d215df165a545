"""The generator's parameters (hw.config): ArrayConfig and the one parser of `--array`."""

import pytest

from hw.config import ArrayConfig, parse_array_option


def test_array_config_takes_lanes():
    assert ArrayConfig.parse("10x9") == ArrayConfig(10, 9) and str(ArrayConfig(10, 9)) == "10x9"
    assert ArrayConfig.parse("10x9/2") == ArrayConfig(10, 9, 2) and str(ArrayConfig(10, 9, 2)) == "10x9/2"
    with pytest.raises(ValueError, match="sparse lanes must be 1..16"):
        ArrayConfig(10, 9, 17)
    with pytest.raises(ValueError, match="array 'auto' is picked per board"):
        ArrayConfig.parse("auto")


@pytest.mark.parametrize("text, config", [
    ("10x9", ArrayConfig(10, 9)), ("2X3", ArrayConfig(2, 3)), ("10x9/4", ArrayConfig(10, 9, 4)),
    (" auto ", None), ("AUTO", None), (None, ArrayConfig()),
])
def test_array_option(text, config):
    assert parse_array_option(text) == config


@pytest.mark.parametrize("text, message", [
    ("ten-by-nine", r"array must be written RxC, RxC/L \(L sparse lanes\) or auto, e.g. 10x9 or 10x9/4, got 'ten-by-nine'"),
    ("10x9/x", r"RxC, RxC/L .* or auto.*got '10x9/x'"),
    ("10x9x2", r"got '10x9x2'"),
    ("0x4", r"array must be 1..16 x 1..16, got 0x4"),
    ("4x4/0", r"sparse lanes must be 1..16, got 0"),
])
def test_a_bad_array_option_is_one_line_naming_the_text(text, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_array_option(text)
    assert "\n" not in str(e.value)
