"""COCO and YouTube-VIS: what we write decodes with pycocotools to exactly our masks, reads back
identically, and a first-frame annotation from an annotation tool tracks as its PNG does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools import mask as coco_mask  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from colortrack.data.annotations import read_mask, read_masks  # noqa: E402
from colortrack.data.coco import encode, read_annotation  # noqa: E402
from tests.conftest import cli, one_line  # noqa: E402
from tests.test_batch import make_clips, masks_of  # noqa: E402


@pytest.fixture
def tracked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A batch of two clips tracked with every format, and points on one of them: OUT/clip0N/,
    OUT/points/ and OUT/youtube-vis.json."""
    manifest = make_clips(tmp_path / "clips", 2, 4)
    write_points(tmp_path / "clips" / "points.json")
    with manifest.open("a") as file:
        file.write(json.dumps({"video": "clip00.mp4", "annotation": "points.json",
                               "name": "points"}) + "\n")
    out = tmp_path / "out"
    code, err = cli(capsys, "track-many", manifest, "--out", out, "--method", "pixels",
                    "--format", "coco", "--format", "youtube-vis")
    assert code == 0, err
    assert sorted(p.name for p in (out / "points").glob("*.json")) == [
        "done.json", "points.coco.json", "points.json"]  # YouTube-VIS is for masks
    return out


def write_points(path: Path) -> Path:
    path.write_text(json.dumps({
        "format": "colortrack-keypoints/1", "names": ["a", "b"], "skeleton": [[0, 1]],
        "frames": [{"frame": 0, "points": [[20.0, 15.0, 1], [40.0, 30.0, 0]]}]}))
    return path


def test_pycocotools_decodes_our_coco_file_to_our_masks(tracked: Path) -> None:
    coco = COCO(str(tracked / "clip00" / "coco.json"))
    pngs = masks_of(tracked / "clip00")
    assert [image["file_name"] for image in coco.dataset["images"]] == [
        f"{i:05d}.jpg" for i in range(4)]
    for image in coco.dataset["images"]:
        ids = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            ids[coco.annToMask(ann) == 1] = ann["track_id"]
        np.testing.assert_array_equal(ids, pngs[image["file_name"].replace(".jpg", ".png")])
    assert {a["track_id"] for a in coco.dataset["annotations"]} == {1, 2}


def test_pycocotools_decodes_our_youtube_vis_file_to_our_masks(tracked: Path) -> None:
    data = json.loads((tracked / "youtube-vis.json").read_text())
    assert [v["name"] for v in data["videos"]] == ["clip00", "clip01"]
    for video in data["videos"]:
        pngs = masks_of(tracked / video["name"])
        instances = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        for t, name in enumerate(video["file_names"]):
            ids = np.zeros((video["height"], video["width"]), dtype=np.uint8)
            for ann in instances:
                rle = ann["segmentations"][t]
                ids[coco_mask.decode({**rle, "counts": rle["counts"].encode()}) == 1] = (
                    ann["track_id"])
            np.testing.assert_array_equal(ids, pngs[Path(name).stem + ".png"])


def test_importing_what_we_export_gives_identical_masks(tracked: Path) -> None:
    pngs = {int(name[:5]): ids for name, ids in masks_of(tracked / "clip01").items()}
    for source, video in [(tracked / "clip01" / "coco.json", None),
                          (tracked / "clip01" / "youtube-vis.json", None),
                          (tracked / "youtube-vis.json", "clip01")]:
        read = read_annotation(source, video)
        assert read.keys() == pngs.keys()
        for frame, ids in pngs.items():
            np.testing.assert_array_equal(read[frame], ids)


def coco_file(path: Path, segmentation: object, **ann: object) -> Path:
    """A one-image COCO file as annotation tools export a video's first frame."""
    path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "frame_000000.PNG", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
                         "segmentation": segmentation, **ann}],
        "categories": [{"id": 1, "name": "dog"}]}))
    return path


def test_a_coco_first_frame_annotation_tracks_as_its_png(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "clips", 1, 4)
    first = read_mask(tmp_path / "clips" / "first.png")
    # Two objects as CVAT writes them: uncompressed RLE and a 0-based track id.
    doc = json.loads(coco_file(tmp_path / "x.json", []).read_text())
    doc["annotations"] = [
        {"id": k, "image_id": 7, "category_id": 1, "iscrowd": 1,
         "attributes": {"track_id": k - 1},
         "segmentation": {"size": [48, 64], "counts": _uncompressed(first == k)}}
        for k in (1, 2)]
    annotation = tmp_path / "first.json"
    annotation.write_text(json.dumps(doc))
    np.testing.assert_array_equal(read_masks(annotation)[0], first)
    for mask, out in [(tmp_path / "clips" / "first.png", "png"), (annotation, "coco")]:
        code, err = cli(capsys, "track", tmp_path / "clips" / "clip00.mp4", "--mask", mask,
                        "--out", tmp_path / out, "--method", "pixels")
        assert code == 0, err
    png, coco = masks_of(tmp_path / "png"), masks_of(tmp_path / "coco")
    assert png.keys() == coco.keys() and len(png) == 4
    for name, ids in png.items():
        np.testing.assert_array_equal(coco[name], ids)
    assert manifest.exists()


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths down the columns, starting with a 0 run."""
    flat, runs, value, length = mask.T.reshape(-1), [], False, 0
    for pixel in flat.tolist():
        if pixel != value:
            runs.append(length)
            value, length = pixel, 0
        length += 1
    return [*runs, length]


def test_polygons_and_compressed_rle_read_with_their_ids(tmp_path: Path) -> None:
    square = [[10, 10, 30, 10, 30, 20, 10, 20]]  # x, y corners
    polygon = read_masks(coco_file(tmp_path / "poly.json", square, track_id=4))[0]
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(square, 48, 64)))
    np.testing.assert_array_equal(polygon, expected.astype(np.uint8) * 4)
    assert polygon.sum() > 0
    blob = np.zeros((48, 64), dtype=bool)
    blob[5:9, 40:50] = True
    read = read_masks(coco_file(tmp_path / "rle.json", encode(blob)))[0]
    np.testing.assert_array_equal(read, blob.astype(np.uint8))  # no id given: rank 1


def test_points_get_coco_keypoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_clips(tmp_path / "clips", 1, 3)
    points = write_points(tmp_path / "points.json")
    code, err = cli(capsys, "track", tmp_path / "clips" / "clip00.mp4", "--points", points,
                    "--out", tmp_path / "out", "--method", "identity", "--format", "coco")
    assert code == 0, err
    code, err = cli(capsys, "track", tmp_path / "clips" / "clip00.mp4", "--points", points,
                    "--out", tmp_path / "vis", "--format", "youtube-vis")
    one_line(err, "YouTube-VIS holds masks, not points")
    ours = json.loads((tmp_path / "out" / "points.json").read_text())
    coco = COCO(str(tmp_path / "out" / "points.coco.json"))
    assert coco.loadCats(1)[0]["keypoints"] == ["a", "b"]
    assert coco.loadCats(1)[0]["skeleton"] == [[1, 2]]
    for frame in ours["frames"]:
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=frame["frame"] + 1))
        triples = np.reshape(ann["keypoints"], (-1, 3))
        np.testing.assert_allclose(triples[:, :2], np.array(frame["points"])[:, :2], atol=0.01)
        assert (triples[:, 2] == 2).tolist() == [bool(p[2]) for p in frame["points"]]


def test_a_youtube_vis_file_of_several_videos_needs_the_name(
        tracked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, "track", tracked.parent / "clips" / "clip00.mp4", "--mask",
                    tracked / "youtube-vis.json", "--out", tracked.parent / "t")
    one_line(err, "youtube-vis.json: holds 2 videos and which to take is not said")
