"""Frame and mask file names: any name sorts, and a mask folder's names are frame numbers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from colortrack.data.annotations import mask_files, write_mask
from colortrack.data.video import natural_key
from colortrack.errors import ColortrackError
from tests.conftest import cli, moving_texture


@given(st.lists(st.text(min_size=1, max_size=12), max_size=20), st.randoms())
def test_any_unicode_names_sort_in_one_order(names, random):
    """'²', '١٢' or '𝟚' are digits to str.isdigit but not all are to int(): no name may raise,
    and the order is total (the same whatever order the folder lists them in)."""
    first = sorted(names, key=natural_key)
    random.shuffle(names)
    assert sorted(names, key=natural_key) == first


def test_digit_runs_sort_as_numbers():
    names = ["f10.png", "f2.png", "F1.png", "1²2.jpg", "f02.png"]
    assert sorted(names, key=natural_key) == ["1²2.jpg", "F1.png", "f02.png", "f2.png",
                                              "f10.png"]


def test_a_frame_folder_with_a_superscript_name_opens(capsys, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(moving_texture(3, 64, 48)):
        Image.fromarray(frame).save(frames / (f"{i}.png" if i < 2 else "1²2.png"))
    write_mask(tmp_path / "m.png", np.pad(np.ones((8, 8), np.uint8), ((20, 20), (28, 28))))
    argv = ["track", frames, "--mask", tmp_path / "m.png", "--out", tmp_path / "out",
            "--method", "identity"]
    assert cli(capsys, *argv)[0] == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


@pytest.mark.parametrize(("names", "culprit", "says"), [
    (["00000.png", "mask.png"], "mask.png", "named by its frame index"),
    (["00000.png", "².png"], "².png", "named by its frame index"),
    (["00000.png", "0.png"], "00000.png", "names frame 0, as 0.png does"),
])
def test_a_mask_folder_name_that_is_not_one_frame_is_an_error(tmp_path, names, culprit, says):
    for name in names:
        write_mask(tmp_path / name, np.ones((4, 4), np.uint8))
    (tmp_path / "notes.txt").write_text("not a mask: left alone")
    with pytest.raises(ColortrackError, match=says) as error:
        mask_files(tmp_path)
    assert f"{tmp_path / culprit}:" in str(error.value) and "\n" not in str(error.value)


def test_a_mask_past_the_video_end_is_a_one_line_error(capsys, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(moving_texture(4, 64, 48)):
        Image.fromarray(frame).save(frames / f"{i:05d}.png")
    masks = tmp_path / "masks"
    masks.mkdir()
    write_mask(masks / "00000.png", np.pad(np.ones((8, 8), np.uint8), ((20, 20), (28, 28))))
    write_mask(masks / "00009.png", np.pad(np.ones((8, 8), np.uint8), ((20, 20), (28, 28))))
    code, err = cli(capsys, "track", frames, "--mask", masks, "--out", tmp_path / "out",
                    "--method", "identity")
    assert code == 1 and err.count("\n") == 1
    assert f"{masks / '00009.png'}: a mask for frame 9, past the video's end (frames 0-3)" in err
    assert not (tmp_path / "out").exists()
