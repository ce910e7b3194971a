"""COCO and YouTube-VIS files: masks as run-length encoding (RLE), points as COCO keypoints.

What annotation tools (CVAT, Label Studio) export and what training sets are built from.
Encoding and decoding go through `pycocotools`, the field's reference for RLE, installed with
the `coco` extra (`pip install colortrack[coco]`).

Written (one video; `youtube_vis` merges several):
- COCO: an image per frame, its `file_name` the frame number (`00012.jpg`), and an RLE
  annotation per frame and object, empty where the object is absent, with the object's id as
  `track_id` (category 1, "object").
- YouTube-VIS: a video per clip (`file_names` `<name>/00012.jpg`) and an instance per object
  with one RLE per frame (empty where absent, so that every frame reads back), its id as
  `track_id`.
- COCO keypoints: a category with the point names and skeleton (1-based, as COCO's), and an
  annotation per frame with `[x, y, v]` triples (v = 2 visible, 0 not).

Read: frames that have at least one annotation (a YouTube-VIS segmentation that is not null)
are annotated frames (several may be given);
polygons and RLE (compressed or not) are both read. An object's id is its `track_id` (ours,
TAO, BURST), else CVAT's `attributes.track_id` + 1 (CVAT counts from 0), else its rank among
the annotations of its frame (1, 2, ...). Where objects overlap, the higher id wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from colortrack.data.files import atomic_write_bytes
from colortrack.data.keypoints import Frame, Skeleton, load_json
from colortrack.errors import ColortrackError

CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]
INFO = {"description": "colortrack masks"}


def mask_api() -> Any:
    """pycocotools' mask module; a one-line error naming the extra where it is missing."""
    try:
        from pycocotools import mask
    except ImportError:
        raise ColortrackError("COCO and YouTube-VIS files need pycocotools: "
                              "pip install 'colortrack[coco]'") from None
    return mask


def frame_name(index: int) -> str:
    """The image name a frame gets in COCO files: its 5-digit number, as DAVIS names frames."""
    return f"{index:05d}.jpg"


Rle = dict[str, Any]  # {"size": [H, W], "counts": str}


def encode(mask: np.ndarray) -> Rle:
    """Compressed RLE of an (H, W) bool mask, JSON-ready (`counts` a string)."""
    rle = mask_api().encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


def _area_box(rle: Rle) -> tuple[int, list[float] | None]:
    api = mask_api()
    coded = {"size": rle["size"], "counts": rle["counts"].encode()}
    area = int(api.area(coded))
    return area, [float(v) for v in api.toBbox(coded)] if area else None


class Recorder:
    """Each frame's masks as RLE, one per object present, gathered while tracking runs; the
    COCO and YouTube-VIS documents of the video come out at the end."""

    def __init__(self) -> None:
        mask_api()  # missing: say so before any tracking
        self.frames: list[tuple[int, dict[int, Rle]]] = []
        self.size: tuple[int, int] = (0, 0)  # (height, width)

    def add(self, index: int, ids: np.ndarray) -> None:
        self.size = (int(ids.shape[0]), int(ids.shape[1]))
        present = np.unique(ids)
        self.frames.append((index, {int(o): encode(ids == o) for o in present if o}))

    def _objects(self) -> tuple[list[int], Rle]:
        objects = sorted({o for _, rles in self.frames for o in rles})
        return objects, encode(np.zeros(self.size, dtype=bool))

    def coco(self) -> dict[str, Any]:
        """The COCO document: an image per frame, an annotation per frame and object."""
        objects, empty = self._objects()
        height, width = self.size
        images, annotations = [], []
        for index, rles in self.frames:
            images.append({"id": index + 1, "file_name": frame_name(index), "width": width,
                           "height": height, "frame_index": index})
            for obj in objects:
                rle = rles.get(obj, empty)
                area, box = _area_box(rle)
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                    "category_id": 1, "track_id": obj, "segmentation": rle,
                                    "area": area, "bbox": box or [0.0, 0.0, 0.0, 0.0],
                                    "iscrowd": 0})
        return {"info": INFO, "images": images, "annotations": annotations,
                "categories": CATEGORIES}

    def youtube_vis(self, name: str) -> dict[str, Any]:
        """The YouTube-VIS document of this one video, called `name`."""
        objects, empty = self._objects()
        height, width = self.size
        video = {"id": 1, "name": name, "width": width, "height": height,
                 "length": len(self.frames),
                 "file_names": [f"{name}/{frame_name(i)}" for i, _ in self.frames]}
        annotations = []
        for obj in objects:
            rles = [frame.get(obj, empty) for _, frame in self.frames]
            measured = [_area_box(rle) for rle in rles]
            annotations.append({"id": len(annotations) + 1, "video_id": 1, "category_id": 1,
                                "track_id": obj, "iscrowd": 0, "segmentations": rles,
                                "areas": [a for a, _ in measured],
                                "bboxes": [b for _, b in measured]})
        return {"info": INFO, "videos": [video], "annotations": annotations,
                "categories": CATEGORIES}


def merge_youtube_vis(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One YouTube-VIS document of several, videos and instances renumbered in order."""
    videos, annotations = [], []
    for doc in documents:
        renumber = {}
        for video in doc["videos"]:
            renumber[video["id"]] = len(videos) + 1
            videos.append(video | {"id": len(videos) + 1})
        for ann in doc["annotations"]:
            annotations.append(ann | {"id": len(annotations) + 1,
                                      "video_id": renumber[ann["video_id"]]})
    return {"info": INFO, "videos": videos,
            "annotations": annotations, "categories": CATEGORIES}


def coco_keypoints(names: Sequence[str], skeleton: Skeleton, frames: Sequence[Frame],
                   size: tuple[int, int]) -> dict[str, Any]:
    """The COCO keypoints document of a point track; `size` is the frames' (width, height)."""
    category = {"id": 1, "name": "object", "supercategory": "object",
                "keypoints": list(names), "skeleton": [[a + 1, b + 1] for a, b in skeleton]}
    images, annotations = [], []
    for index, xy, visible in frames:
        images.append({"id": index + 1, "file_name": frame_name(index), "width": size[0],
                       "height": size[1], "frame_index": index})
        triples = [[round(float(x), 2), round(float(y), 2), 2 if v else 0]
                   for (x, y), v in zip(xy.tolist(), visible.tolist(), strict=True)]
        shown = [t for t in triples if t[2]]
        box = ([min(t[0] for t in shown), min(t[1] for t in shown)] if shown else [0.0, 0.0])
        far = ([max(t[0] for t in shown), max(t[1] for t in shown)] if shown else box)
        annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": 1,
                            "track_id": 1, "keypoints": [v for t in triples for v in t],
                            "num_keypoints": len(shown), "iscrowd": 0, "area": 0.0,
                            "bbox": [box[0], box[1], far[0] - box[0], far[1] - box[1]]})
    return {"info": {"description": "colortrack points"}, "images": images,
            "annotations": annotations, "categories": [category]}


def write_json(path: str | Path, document: dict[str, Any]) -> None:
    """Write a document compactly (RLE strings make it large), atomically."""
    atomic_write_bytes(path, json.dumps(document, separators=(",", ":")).encode() + b"\n")


def is_coco(data: Any) -> bool:
    """Whether parsed JSON is a COCO or YouTube-VIS document (not colortrack's points)."""
    return isinstance(data, dict) and "annotations" in data and (
        "images" in data or "videos" in data)


def read_annotation(path: str | Path, video: str | None = None) -> dict[int, np.ndarray]:
    """Masks by frame index from a COCO or YouTube-VIS file. `video` names the clip to take
    from a YouTube-VIS file of several (by its `name` or its frames' folder)."""
    path = Path(path)
    data = load_json(path)
    if not is_coco(data):
        raise ColortrackError(f"{path}: not a COCO or YouTube-VIS file (no images or videos "
                              "with annotations)")
    try:
        found = _youtube_vis(data, video) if "videos" in data else _coco(data)
    except ColortrackError as error:
        raise ColortrackError(f"{path}: {error}") from None
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ColortrackError(f"{path}: malformed annotation ({type(error).__name__}: "
                              f"{error})") from None
    if not found:
        raise ColortrackError(f"{path}: holds no object annotations")
    return dict(sorted(found.items()))


_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _frame_of(image: Mapping[str, Any]) -> int:
    if isinstance(image.get("frame_index"), int):
        return image["frame_index"]
    stem = Path(str(image.get("file_name", ""))).stem
    match = _DIGITS.search(stem)
    if match is None:
        raise ColortrackError(f"cannot tell the frame of image {image.get('file_name')!r} "
                              "(its name holds no frame number)")
    return int(match.group(1))


def _object_ids(annotations: Sequence[Mapping[str, Any]]) -> list[int]:
    ids = []
    for rank, ann in enumerate(annotations, start=1):
        attributes = ann.get("attributes") or {}
        if "track_id" in ann:
            ids.append(int(ann["track_id"]))
        elif isinstance(attributes, dict) and "track_id" in attributes:
            ids.append(int(attributes["track_id"]) + 1)
        else:
            ids.append(rank)
    for obj in ids:
        if not 1 <= obj <= 255:
            raise ColortrackError(f"object id {obj} is outside 1..255")
    return ids


def _decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A polygon list or an RLE (compressed or not) as an (H, W) bool mask."""
    api = mask_api()
    if isinstance(segmentation, list):
        rles = api.frPyObjects(segmentation, height, width)
        rle = api.merge(rles) if isinstance(rles, list) else rles
    elif isinstance(segmentation["counts"], list):
        rle = api.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    if tuple(rle["size"]) != (height, width):
        raise ColortrackError(f"an annotation is {rle['size'][1]}x{rle['size'][0]} but its "
                              f"image is {width}x{height}")
    return api.decode(rle).astype(bool)


def _paint(height: int, width: int, objects: Iterable[tuple[int, Any]]) -> np.ndarray:
    ids = np.zeros((height, width), dtype=np.uint8)
    for obj, segmentation in sorted(objects, key=lambda pair: pair[0]):
        ids[_decode(segmentation, height, width)] = obj
    return ids


def _coco(data: Mapping[str, Any]) -> dict[int, np.ndarray]:
    images = {image["id"]: image for image in data["images"]}
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for ann in sorted(data["annotations"], key=lambda a: a.get("id", 0)):
        if ann.get("segmentation"):
            by_image.setdefault(ann["image_id"], []).append(ann)
    masks = {}
    for image_id, anns in by_image.items():
        image = images[image_id]
        frame = _frame_of(image)
        if frame in masks:
            raise ColortrackError(f"two images are frame {frame}")
        pairs = zip(_object_ids(anns), (a["segmentation"] for a in anns), strict=True)
        masks[frame] = _paint(int(image["height"]), int(image["width"]), pairs)
    return masks


def _youtube_vis(data: Mapping[str, Any], name: str | None) -> dict[int, np.ndarray]:
    videos = data["videos"]
    if len(videos) != 1:
        def names(v: Mapping[str, Any]) -> set[str]:
            first = Path(str((v.get("file_names") or [""])[0]))
            return {str(v.get("name")), first.parent.name}
        videos = [v for v in videos if name is not None and name in names(v)]
        if len(videos) != 1:
            wanted = (f"none is named {name!r} (by its name or its frames' folder)" if name
                      else "which to take is not said (a track-many entry's name says it)")
            raise ColortrackError(f"holds {len(data['videos'])} videos and {wanted}")
    video = videos[0]
    anns = [a for a in sorted(data["annotations"], key=lambda a: a.get("id", 0))
            if a["video_id"] == video["id"]]
    height, width = int(video["height"]), int(video["width"])
    frames = [_frame_of({"file_name": f}) for f in video["file_names"]]
    masks = {}
    for position, frame in enumerate(frames):
        present = [(obj, a["segmentations"][position])
                   for obj, a in zip(_object_ids(anns), anns, strict=True)
                   if a["segmentations"][position]]
        if present:
            masks[frame] = _paint(height, width, present)
    return masks
