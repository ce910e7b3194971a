"""Replacing an output folder keeps what is the user's: its permissions, group, setgid bit and
extended attributes, and every file the command did not write, even under --overwrite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from colortrack.data.outputs import MANIFEST, output_folder
from colortrack.errors import ColortrackError
from colortrack.eval.analysis import REPORT_FILES, _report_file

DEMO = {"model+pixels", "model", "flow", "identity", "demo.gif"}.__contains__


def write(out: Path, ours, *names: str, overwrite: bool = True) -> None:
    """One run of a command writing `names` into `out`."""
    with output_folder(out, overwrite=overwrite, ours=ours) as stage:
        for name in names:
            (stage / name).write_text("new " + name)


def another_group() -> int:
    """A group this user may give a folder other than its own (any, for root)."""
    if os.getuid() == 0:
        return os.getgid() + 4242
    others = [g for g in os.getgroups() if g != os.getgid()]
    if not others:
        pytest.skip("this user belongs to one group only")
    return others[0]


def test_a_replaced_folder_keeps_mode_group_and_setgid(tmp_path):
    out = tmp_path / "shared"
    write(out, DEMO, "flow")
    group = another_group()
    os.chown(out, -1, group)
    os.chmod(out, 0o2770)  # a group folder: new files get its group
    write(out, DEMO, "flow", "identity")
    info = os.stat(out)
    assert stat.S_IMODE(info.st_mode) == 0o2770 and info.st_gid == group
    os.chmod(out, 0o700)  # a private folder stays private
    write(out, DEMO, "flow")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700


def test_a_first_output_gets_the_usual_mode_and_the_parents_setgid(tmp_path):
    os.chmod(tmp_path, 0o2775)
    write(tmp_path / "new", DEMO, "flow")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == (0o777 & ~umask) | stat.S_ISGID


def test_a_replaced_folder_keeps_its_extended_attributes(tmp_path):
    out = tmp_path / "tagged"
    write(out, DEMO, "flow")
    try:
        os.setxattr(out, "user.project", b"dogs")
    except OSError:
        pytest.skip("the file system here has no user extended attributes")
    write(out, DEMO, "flow")
    assert os.getxattr(out, "user.project") == b"dogs"


def test_overwrite_never_removes_a_users_folder_named_like_an_output(tmp_path):
    """`demo --overwrite` once deleted a user's folder that shared a method's name."""
    out = tmp_path / "demo"
    (out / "flow").mkdir(parents=True)
    (out / "flow" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(ColortrackError, match="flow: was not written by colortrack"):
        write(out, DEMO, "flow", "model")
    assert (out / "flow" / "holiday.jpg").read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == ["flow"]


def test_overwrite_removes_only_what_an_earlier_run_recorded(tmp_path):
    """`analyze --overwrite` once deleted every PNG in OUT, the user's own included."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "photo.png").write_bytes(b"mine")
    assert not _report_file("photo.png") and _report_file("over_time.png")
    write(out, _report_file, "report.html", "over_time.png", "colorization.png")
    assert (out / MANIFEST).read_text().split() == [
        "colorization.png", "over_time.png", "report.html"]
    with pytest.raises(ColortrackError, match="already holds"):
        write(out, _report_file, "report.html", overwrite=False)
    write(out, _report_file, "report.html", "over_time.png")  # a run without colorization
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST, "over_time.png", "photo.png", "report.html"]
    assert (out / "photo.png").read_bytes() == b"mine"
    assert REPORT_FILES >= {"report.html", "over_time.png", "colorization.png"}


def test_a_name_the_command_does_not_claim_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ColortrackError, match="notes.txt: was not written by colortrack"):
        write(out, DEMO, "flow", "notes.txt")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
