"""quant.data: the ImageFolder loader and each kind of bad input, on tiny generated images."""

import numpy as np
import pytest
from PIL import Image

from quant.data import (DEFAULT_CLASSES, DataError, centre_crop, check_model_input, drawn_split, load_image, load_split,
                        read_split)
from quant_helpers import class_images, split_dataset, write_image


def test_reads_splits_in_the_default_class_order(tmp_path):
    split_dataset(tmp_path, classes=("sheep", "cat", "horse", "cow", "elephant"))
    tr = read_split(tmp_path, "train")
    assert tr.class_names == list(DEFAULT_CLASSES)
    assert tr.images.shape == (20, 3, 72, 72) and tr.images.dtype == np.uint8
    assert tr.counts() == {c: 4 for c in DEFAULT_CLASSES}
    assert all(f"/{tr.class_names[l]}/" in f for f, l in zip(tr.files, tr.labels))
    assert centre_crop(tr.images).shape == (20, 3, 64, 64)


def test_classes_pick_a_subset_in_the_given_order(tmp_path):
    split_dataset(tmp_path)
    va = read_split(tmp_path, "val", ["horse", "cat"], limit=1)
    assert va.class_names == ["horse", "cat"]
    assert list(va.labels) == [0, 1]
    assert "/horse/" in va.files[0] and "/cat/" in va.files[1]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        read_split(tmp_path / "nope", "train")


def test_missing_split_folder(tmp_path):
    split_dataset(tmp_path)
    with pytest.raises(DataError, match="no 'test' split"):
        read_split(tmp_path, "test")


def test_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        read_split(tmp_path, "train")


def test_class_folder_without_images(tmp_path):
    split_dataset(tmp_path)
    for f in (tmp_path / "train" / "cow").iterdir():
        f.unlink()
    (tmp_path / "train" / "cow" / "readme.txt").write_text("no pictures here")
    with pytest.warns(UserWarning, match="readme.txt"), pytest.raises(DataError, match="no readable images for class 'cow'"):
        read_split(tmp_path, "train")


def test_corrupt_and_non_image_files_are_skipped_counted_and_named(tmp_path):
    split_dataset(tmp_path)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tmp_path / "train" / "cow" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning) as rec:
        tr = read_split(tmp_path, "train")
    messages = " ".join(str(w.message) for w in rec)
    assert "broken.jpg" in messages and "notes.txt" in messages
    assert tr.skipped == 2
    assert len(tr) == 20 and not any(f.endswith(("broken.jpg", "notes.txt")) for f in tr.files)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_odd_image_modes_become_rgb_uint8(tmp_path, mode):
    path = write_image(tmp_path / ("img.jpg" if mode == "CMYK" else "img.png"), mode, size=(80, 100))
    arr = load_image(path, 72)
    assert arr.shape == (3, 72, 72) and arr.dtype == np.uint8


def test_grey_and_16_bit_values_are_kept(tmp_path):
    Image.fromarray(np.full((72, 72), 77, dtype=np.uint8)).save(tmp_path / "grey.png")
    assert np.all(load_image(tmp_path / "grey.png", 72) == 77)
    Image.fromarray(np.full((72, 72), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((72, 72), 32896, dtype=np.uint16)).save(tmp_path / "mid16.png")
    assert np.all(load_image(tmp_path / "white16.png", 72) == 255)
    assert np.all(load_image(tmp_path / "mid16.png", 72) == 128)


def test_rgba_keeps_colour_and_cmyk_matches_pil(tmp_path):
    rgba = np.zeros((72, 72, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    got = load_image(tmp_path / "a.png", 72)
    assert np.all(got[0] == 200) and np.all(got[1:] == 0)
    cmyk = write_image(tmp_path / "c.tif", "CMYK")
    with Image.open(cmyk) as img:
        want = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(load_image(cmyk, 72), want)


def test_other_sizes_are_resized_and_centre_cropped(tmp_path):
    arr = np.zeros((144, 288, 3), dtype=np.uint8)
    arr[:, 72:216] = 255  # the centre square of the wide image is white
    Image.fromarray(arr).save(tmp_path / "wide.png")
    got = load_image(tmp_path / "wide.png", 72)
    assert got.shape == (3, 72, 72)
    assert got[:, :, 1:-1].min() == 255 and got.min() > 128  # only the bilinear edge is softened


def test_unknown_class_is_refused(tmp_path):
    split_dataset(tmp_path)
    with pytest.raises(DataError, match="no folder for class.*dog"):
        read_split(tmp_path, "train", ["cat", "dog"])


def test_unknown_class_folder_is_named_in_a_warning(tmp_path):
    split_dataset(tmp_path)
    class_images(tmp_path / "train", ("zebra",), 1)
    class_images(tmp_path / "val", ("zebra",), 1)
    with pytest.warns(UserWarning, match="zebra"):
        tr = read_split(tmp_path, "train")
    assert tr.class_names == list(DEFAULT_CLASSES)


def test_classes_differing_between_splits(tmp_path):
    split_dataset(tmp_path)
    for f in (tmp_path / "val" / "sheep").iterdir():
        f.unlink()
    (tmp_path / "val" / "sheep").rmdir()
    with pytest.raises(DataError, match="different classes.*sheep"):
        read_split(tmp_path, "train")
    # a subset both splits hold is fine; one that val lacks names the folder
    assert read_split(tmp_path, "val", ["cat", "cow"]).class_names == ["cat", "cow"]
    with pytest.raises(DataError, match="sheep"):
        read_split(tmp_path, "val", ["cat", "sheep"])


def test_italian_folder_names_map_to_english(tmp_path):
    split_dataset(tmp_path, classes=("gatto", "mucca", "elefante", "cavallo", "pecora"))
    tr = read_split(tmp_path, "train")
    assert tr.class_names == list(DEFAULT_CLASSES)
    assert "/gatto/" in tr.files[0]
    assert read_split(tmp_path, "val", ["pecora", "cat"]).class_names == ["sheep", "cat"]


def test_italian_and_english_folder_for_one_class(tmp_path):
    split_dataset(tmp_path)
    class_images(tmp_path / "train", ("gatto",), 1)
    with pytest.raises(DataError, match="both mean class 'cat'"):
        read_split(tmp_path, "train")


def test_single_folder_is_split_by_seed(tmp_path):
    class_images(tmp_path, per_class=20)
    parts = {s: read_split(tmp_path, s, seed=3) for s in ("train", "val", "test")}
    files = [set(p.files) for p in parts.values()]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert len(set.union(*files)) == 100 and 60 < len(parts["train"]) < 95
    assert read_split(tmp_path, "val", seed=3).files == parts["val"].files
    assert read_split(tmp_path, "val", seed=4).files != parts["val"].files
    for p in parts.values():
        assert all(f"/{p.class_names[l]}/" in f for f, l in zip(p.files, p.labels))


def test_drawn_split_ignores_other_classes_and_files(tmp_path):
    class_images(tmp_path, per_class=20)
    val = read_split(tmp_path, "val").files
    subset = read_split(tmp_path, "val", ["horse", "cat"]).files
    assert sorted(subset) == sorted(f for f in val if "/horse/" in f or "/cat/" in f)
    train = read_split(tmp_path, "train").files
    write_image(tmp_path / "cat" / "new.png")
    (tmp_path / "cow" / "cow-0.png").unlink()
    gone = str(tmp_path / "cow" / "cow-0.png")
    assert {f for f in read_split(tmp_path, "val").files if "new.png" not in f} == set(val) - {gone}
    assert {f for f in read_split(tmp_path, "train").files if "new.png" not in f} == set(train) - {gone}


def test_a_split_with_no_image_is_refused(tmp_path):
    class_images(tmp_path, ("cat",), per_class=1)
    drawn = drawn_split(tmp_path / "cat" / "cat-0.png", 0, 0.1)
    assert read_split(tmp_path, drawn).files == [str(tmp_path / "cat" / "cat-0.png")]
    other = "test" if drawn == "val" else "val"
    with pytest.raises(DataError, match=f"no image falls in the '{other}' split"):
        read_split(tmp_path, other)


@pytest.mark.parametrize("size", [(100, 100), (200, 100)])  # over PIL's limit: a warning; over twice it: an error
def test_decompression_bombs_are_skipped_and_named(tmp_path, monkeypatch, size):
    split_dataset(tmp_path)
    write_image(tmp_path / "train" / "cat" / "huge.png", size=size)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # the 72x72 images (5184 pixels) pass
    with pytest.warns(UserWarning, match="huge.png: too large to decode"):
        tr = read_split(tmp_path, "train")
    assert tr.skipped == 1 and len(tr) == 20


@pytest.mark.parametrize("shape", [(2, 32, 32), (4, 8, 8), (49,), (1, 1, 49, 10)])
def test_a_model_input_that_images_cannot_feed_is_refused_by_name_unless_npz_data_holds_it(shape, tmp_path):
    for ok in ((3, 64, 64), (1, 28, 28), (3, 32, 32), (1, 49, 10)):
        check_model_input(ok, "m.onnx")
    with pytest.raises(DataError, match=rf"^m\.onnx: the model takes {'x'.join(map(str, shape))} inputs, .* <split>\.npz"):
        check_model_input(shape, "m.onnx", tmp_path, "val")
    np.savez(tmp_path / "val.npz", x=np.zeros((2, *shape), np.int8), y=np.zeros(2, np.int64))
    check_model_input(shape, "m.onnx", tmp_path, "val")


@pytest.mark.parametrize("shape, size", [((3, 32, 32), (32, 32)), ((1, 28, 28), (40, 30)), ((3, 49, 10), (100, 20)),
                                         ((3, 64, 64), (72, 72)), ((3, 64, 64), (100, 80))])
def test_images_are_read_at_the_models_shape_and_pass_untouched_at_that_size(tmp_path, shape, size):
    class_images(tmp_path / "val", ("cat", "dog"), 2, size=(size[1], size[0]))
    x, y, names = load_split(tmp_path, "val", shape=shape)
    assert x.shape == (4, *shape) and x.dtype == np.uint8 and names == ["cat", "dog"] and list(y) == [0, 0, 1, 1]
    if size == shape[1:]:
        with Image.open(tmp_path / "val" / "cat" / "cat-0.png") as img:
            want = np.asarray(img.convert("L" if shape[0] == 1 else "RGB"))
        assert np.array_equal(x[0], want.reshape(*size, -1).transpose(2, 0, 1))


def test_npz_tensors_keep_their_integers_labels_class_names_and_limit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (9, 1, 49, 10), dtype=np.int8)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "val.npz", x=x, y=y, classes=np.array(["yes", "no", "up"]))
    got, labels, names = load_split(tmp_path, "val", shape=(1, 49, 10))
    assert got.dtype == np.int8 and np.array_equal(got, x) and list(labels) == list(y) and names == ["yes", "no", "up"]
    got, labels, names = load_split(tmp_path, "val", limit=1, classes=["up", "yes"], shape=(1, 49, 10))
    assert np.array_equal(got, x[[0, 2]]) and list(labels) == [1, 0] and names == ["up", "yes"]


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(2, int)}, "holds float32"),
    ({"x": np.zeros((2, 1, 4, 4), np.int8)}, "needs arrays 'x'"),
    ({"x": np.zeros((2, 1, 4, 4), np.int8), "y": np.zeros(3, int)}, "'y' must be 2"),
    ({"x": np.zeros((2, 1, 5, 4), np.int8), "y": np.zeros(2, int)}, "holds 1x5x4 tensors, but the model takes 1x4x4"),
])
def test_a_bad_npz_file_is_one_error_naming_it(tmp_path, arrays, match):
    np.savez(tmp_path / "val.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_split(tmp_path, "val", shape=(1, 4, 4))
    (tmp_path / "val.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_split(tmp_path, "val", shape=(1, 4, 4))


def test_a_folder_named_like_an_image_and_a_looping_link_are_skipped_with_a_warning(tmp_path):
    split_dataset(tmp_path)
    (tmp_path / "train" / "cat" / "album.jpg").mkdir()
    (tmp_path / "train" / "cow" / "loop.png").symlink_to(tmp_path / "train" / "cow" / "loop.png")
    with pytest.warns(UserWarning) as rec:
        tr = read_split(tmp_path, "train")
    said = " ".join(str(w.message) for w in rec)
    assert "album.jpg: not a readable file (a folder)" in said and "loop.png: not a readable file (a broken or looping link)" in said
    assert tr.skipped == 2 and len(tr) == 20
