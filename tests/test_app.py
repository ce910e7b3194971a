"""`colortrack app` as a person uses it: the real page in headless Chromium, driven by Playwright.

Skipped where Flask, Playwright or Chromium is missing, unless COLORTRACK_REQUIRE_BROWSER=1 (CI
installs them and sets it, so there the test cannot silently skip).
"""

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colortrack.data.annotations import read_mask
from colortrack.data.outputs import MANIFEST
from colortrack.demo import demo_clip, score

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    try:
        import flask  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt-get install chromium)"
    return None


if _missing():
    if os.environ.get("COLORTRACK_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"the browser test cannot run: {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.app_server import Served  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`colortrack app` as a user starts it, in a folder of their own (which the page may
    use); the page opens the URL it prints. Stopping it leaves no upload behind."""
    base, temp = tmp_path_factory.mktemp("videos"), tmp_path_factory.mktemp("temp")
    process = subprocess.Popen(
        [sys.executable, "-m", "colortrack", "app", "--port", "0"],  # default method
        cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(temp)})
    line = process.stdout.readline()
    found = re.search(r"(http://127\.0\.0\.1:(\d+)/\?token=(\S+))", line)
    assert found, (line, process.poll())
    yield found[1], base, Served(None, int(found[2]), found[3])
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.stderr.read()
    assert not list(temp.iterdir()), "an upload outlived the server"


@pytest.fixture(scope="module")
def page(served):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(served[0])
        yield page
        browser.close()


def drag_box(page, box):
    """Drag the mouse over the canvas from one corner of `box` (video pixels) to the other."""
    rect = page.locator("#canvas").bounding_box()
    width = int(page.evaluate("document.getElementById('canvas').width"))
    scale = rect["width"] / width
    x0, y0, x1, y1 = (v * scale for v in box)
    page.mouse.move(rect["x"] + x0, rect["y"] + y0)
    page.mouse.down()
    page.mouse.move(rect["x"] + (x0 + x1) / 2, rect["y"] + (y0 + y1) / 2, steps=4)
    page.mouse.move(rect["x"] + x1, rect["y"] + y1, steps=4)
    page.mouse.up()


def test_bad_input_gets_a_message_on_the_page(page, served, tmp_path):
    assert page.url.endswith("/") and "token" not in page.url  # kept as a cookie instead
    expect(page.locator("#method")).to_contain_text("method: model+pixels")
    (served[1] / "notes.txt").write_text("not a video")
    page.fill("#path", "notes.txt")
    page.click("#open")
    expect(page.locator("#message")).to_have_class("error")
    expect(page.locator("#message")).to_contain_text("notes.txt")
    page.fill("#path", str(tmp_path))  # outside the folder the app was started in
    page.click("#open")
    expect(page.locator("#message")).to_contain_text("outside the folders this app may use")
    page.fill("#export-folder", "out")
    page.click("#export")
    expect(page.locator("#message")).to_contain_text("propagate first")


def test_box_propagate_export_tracks_the_demo_dog(page, served, tmp_path):
    video, truth = demo_clip()
    shutil.copy(video, served[1] / "dog.mp4")  # paths typed are relative to the app's folder
    page.fill("#path", "dog.mp4")
    page.click("#open")
    expect(page.locator("#message")).to_contain_text("opened")
    page.click("#propagate")  # before any mask: refused, with the reason
    expect(page.locator("#message")).to_contain_text("frame 0 has no mask")

    ys, xs = np.nonzero(read_mask(truth[0]))
    box = (xs.min() - 8, ys.min() - 8, xs.max() + 8, ys.max() + 8)
    drag_box(page, box)
    expect(page.locator("#message")).to_contain_text("mask proposed", timeout=30_000)
    assert served[2].state()["annotated"] == [0]

    page.click("#propagate")
    expect(page.locator("#export")).to_be_disabled()  # while it propagates
    expect(page.locator("#progress-label")).to_contain_text("left")  # an estimate of the rest
    expect(page.locator("#message")).to_contain_text("tracked", timeout=120_000)
    expect(page.locator("#export")).to_be_enabled()
    out = served[1] / "dog-masks"
    page.fill("#export-folder", "dog-masks")
    page.click("#export")
    expect(page.locator("#message")).to_contain_text("exported 30 frames", timeout=60_000)
    assert (out / "overlay.mp4").stat().st_size > 0
    j, f = score(out, truth)
    (copied := tmp_path / "identity").mkdir()
    for path in truth:
        shutil.copy(out / "00000.png", copied / path.name)
    j0, f0 = score(copied, truth)
    assert (j + f) / 2 > (j0 + f0) / 2 + 15, ((j + f) / 2, (j0 + f0) / 2)
    if os.environ.get("COLORTRACK_SCREENSHOT"):  # for the README: benchmarks/app_screenshot.sh
        page.locator("#slider").fill("20")
        page.wait_for_timeout(1000)
        page.screenshot(path=os.environ["COLORTRACK_SCREENSHOT"], full_page=True)

    before = sorted(p.name for p in out.iterdir())
    page.click("#export")  # the same folder again, without 'overwrite'
    expect(page.locator("#message")).to_contain_text("already holds files")
    assert sorted(p.name for p in out.iterdir()) == before

    # The strip under the timeline leads to the least confident frame; its true mask there
    # is a correction, tracked both ways.
    confidence = served[2].state()["confidence"]
    worst = min(range(1, 30), key=lambda t: (confidence[t], t))
    page.click("#worst")
    expect(page.locator("#frame-label")).to_contain_text(f"frame {worst} /")
    with open(truth[worst], "rb") as correction:
        assert served[2].call("PUT", f"/api/mask/{worst}", correction.read())[0] == 200
    page.click("#propagate")
    expect(page.locator("#message")).to_contain_text("tracked", timeout=120_000)
    state = served[2].state()
    assert state["annotated"] == [0, worst] and state["confidence"][worst] == 1.0


def test_a_correction_with_the_brush_and_points_on_frame_0(page, served, tmp_path):
    video, _ = demo_clip()
    page.set_input_files("#upload", str(video))  # a file chosen in the page
    expect(page.locator("#message")).to_contain_text("opened")
    page.locator("#slider").fill("12")
    page.check("input[value=brush]")
    page.select_option("#object", "2")
    drag_box(page, (100, 100, 160, 140))  # a brush stroke
    expect(page.locator("#frame-label")).to_contain_text("frame 12 / 29 (annotated)")
    status, mask = served[2].call("GET", "/api/mask/12")
    assert status == 200 and (np.asarray(Image.open(io.BytesIO(mask))) == 2).sum() > 500

    page.locator("#slider").fill("0")
    expect(page.locator("#frame-label")).to_contain_text("frame 0 /")
    page.check("input[value=points]")
    for x, y in ((400, 200), (420, 300)):
        drag_box(page, (x, y, x, y))
    expect(page.locator("#message")).not_to_have_class("error")
    for _ in range(100):  # the clicks' requests are asynchronous
        if len(served[2].state()["points"]) == 2:
            break
        page.wait_for_timeout(100)
    assert len(served[2].state()["points"]) == 2
    page.click("#propagate-points")
    expect(page.locator("#message")).to_contain_text("tracked", timeout=120_000)
    page.fill("#export-folder", "points")
    page.click("#export")
    expect(page.locator("#message")).to_contain_text("exported 30 frames")
    assert {p.name for p in (served[1] / "points").iterdir()} == {
        "points.json", "points.csv", "overlay.mp4", MANIFEST}
