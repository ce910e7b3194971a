"""`colortrack app`: annotate a video in the browser, track, correct, export.

A Flask server on localhost holds one session: the video's frames (as JPEG), the masks a user
made (by frame), or the points clicked on frame 0, and the tracker's results. The page
(assets/app/index.html, no asset from the internet) draws on a canvas and calls the JSON API
below; every error a user can cause comes back as {"error": message} and is shown on the page.
"""

from __future__ import annotations

import io
import tempfile
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from colortrack.data.annotations import write_mask
from colortrack.data.files import shown
from colortrack.data.keypoints import Keypoints, write_track_csv, write_track_json
from colortrack.data.outputs import output_folder
from colortrack.data.video import VideoReader
from colortrack.data.video_writer import VideoWriter
from colortrack.errors import ColortrackError, UsageError
from colortrack.track.tracking import LabelPropagator, Tracker, is_tracking_output
from colortrack.track.visualize import draw_points, overlay_mask

MAX_FRAMES = 20_000  # JPEGs in memory: about 40 KB each at 480p


def _png(ids: np.ndarray) -> bytes:
    """Object ids as a grayscale PNG (value = id): lossless, and what the page reads back."""
    _, data = cv2.imencode(".png", ids)
    return data.tobytes()


def _ids(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def _rgb(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


@dataclass
class Session:
    """One video being annotated: what the page shows and what tracking produced."""

    propagator: LabelPropagator
    video: Path | None = None
    frames: list[bytes] = field(default_factory=list)  # JPEG per frame
    size: tuple[int, int] = (0, 0)  # width, height
    fps: float = 24.0
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # the user's, by frame
    points: list[tuple[float, float]] = field(default_factory=list)  # clicked on frame 0
    results: dict[int, bytes] = field(default_factory=dict)  # tracked ids (PNG) by frame
    tracks: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=lambda: {"running": False, "done": 0,
                                                               "total": 0, "error": None})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, path: str | Path) -> dict[str, Any]:
        """Decode a video (or frame folder) for the page; an unreadable one is a clear error."""
        path = Path(path).expanduser()
        if self.progress["running"]:
            raise UsageError("tracking is running; wait for it to finish")
        frames = []
        with VideoReader(path) as reader:
            fps = reader.info.fps or 24.0
            for frame in reader:
                if len(frames) == MAX_FRAMES:
                    raise UsageError(f"{path}: more than {MAX_FRAMES} frames; cut the video")
                _, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                frames.append(data.tobytes())
        if not frames:
            raise ColortrackError(f"{path}: the video has no frames")
        height, width = _rgb(frames[0]).shape[:2]
        self.video, self.frames, self.size, self.fps = path, frames, (width, height), fps
        self.masks, self.points, self.results, self.tracks = {}, [], {}, []
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"video": str(self.video) if self.video else None, "frames": len(self.frames),
                "width": self.size[0], "height": self.size[1], "fps": self.fps,
                "annotated": sorted(self.masks), "points": self.points,
                "tracked": bool(self.results or self.tracks), "progress": self.progress}

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as (H, W, 3) RGB, from its JPEG."""
        self._check(index)
        return _rgb(self.frames[index])

    def _check(self, index: int) -> None:
        if not self.frames:
            raise UsageError("open a video first")
        if not 0 <= index < len(self.frames):
            raise UsageError(f"frame {index} is outside the video (0-{len(self.frames) - 1})")

    def set_mask(self, index: int, ids: np.ndarray) -> None:
        self._check(index)
        if ids.shape != (self.size[1], self.size[0]):
            raise UsageError(f"mask is {ids.shape[1]}x{ids.shape[0]}, the video "
                             f"{self.size[0]}x{self.size[1]}")
        if ids.any():
            self.masks[index] = ids.astype(np.uint8)
        else:
            self.masks.pop(index, None)

    def mask(self, index: int) -> np.ndarray | None:
        """The user's mask of a frame, else the tracked one, else None."""
        self._check(index)
        if index in self.masks:
            return self.masks[index]
        return _ids(self.results[index]) if index in self.results else None

    def grabcut(self, index: int, box: list[float], obj: int) -> None:
        """Replace object `obj` in frame `index`'s mask by OpenCV's GrabCut proposal in `box`."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, x1 = sorted((max(0, x0), min(self.size[0], x1)))
        y0, y1 = sorted((max(0, y0), min(self.size[1], y1)))
        if x1 - x0 < 4 or y1 - y0 < 4 or not 1 <= obj <= 255:
            raise UsageError("draw a box of at least 4x4 pixels around the object")
        image = np.ascontiguousarray(self.frame(index)[..., ::-1])
        proposal = np.zeros(image.shape[:2], np.uint8)
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(image, proposal, (x0, y0, x1 - x0, y1 - y0), *models, 5,
                    cv2.GC_INIT_WITH_RECT)
        found = (proposal == cv2.GC_FGD) | (proposal == cv2.GC_PR_FGD)
        current = self.mask(index)
        ids = np.zeros(image.shape[:2], np.uint8) if current is None else current.copy()
        ids[ids == obj] = 0
        ids[found] = obj
        self.set_mask(index, ids)

    def track(self, mode: str) -> None:
        """Track masks (from every annotated frame) or points (from frame 0), in a thread."""
        if not self.frames:
            raise UsageError("open a video first")
        if mode == "masks" and 0 not in self.masks:
            raise UsageError("frame 0 has no mask: draw the object on the first frame")
        if mode == "points" and not self.points:
            raise UsageError("click at least one point on frame 0")
        if mode not in ("masks", "points"):
            raise UsageError(f"unknown mode {mode!r}")
        with self.lock:
            if self.progress["running"]:
                raise UsageError("tracking is already running")
            self.progress = {"running": True, "done": 0, "total": len(self.frames),
                             "error": None}
        threading.Thread(target=self._track, args=(mode, dict(self.masks)), daemon=True).start()

    def _track(self, mode: str, masks: dict[int, np.ndarray]) -> None:
        tracker = Tracker(self.propagator)
        frames = (self.frame(i) for i in range(len(self.frames)))
        try:
            if mode == "masks":
                self.tracks, self.results = [], {}  # filled as frames come, for the page
                for index, _, ids in tracker.track_frames(frames, masks):
                    self.results[index] = _png(ids)
                    self.progress["done"] = index + 1
            else:
                xy = np.array(self.points, np.float32)
                names = tuple(f"point{i + 1}" for i in range(len(xy)))
                points = Keypoints(names, xy, np.ones(len(xy), bool))
                tracks = []
                for index, _, xy, visible in tracker.track_points_frames(frames, points):
                    tracks.append((index, xy, visible))
                    self.progress["done"] = index + 1
                self.results, self.tracks = {}, tracks
        except Exception as error:  # shown on the page; the session stays usable
            self.progress["error"] = str(error) or type(error).__name__
        finally:
            self.progress["running"] = False

    def export(self, folder: str, overwrite: bool) -> str:
        """Masks as DAVIS palette PNGs (or points as JSON and CSV) and the overlay MP4, into
        `folder`, whole or not at all; a folder holding files is replaced only with `overwrite`."""
        if not folder.strip():
            raise UsageError("name an export folder")
        out = Path(folder).expanduser()
        if not (self.results or self.tracks):
            raise UsageError("nothing to export yet: propagate first")
        if self.video is not None and out.resolve() in (self.video.resolve(),
                                                        *self.video.resolve().parents):
            raise UsageError(f"{out}: holds the video; choose another export folder")
        if out.is_dir() and any(map(shown, out.iterdir())) and not overwrite:
            raise UsageError(f"{out}: already holds files; tick 'overwrite' to replace them")
        with (output_folder(out, overwrite=overwrite, ours=is_tracking_output) as stage,
              VideoWriter(stage / "overlay.mp4", self.fps) as writer):
            if self.tracks:
                names = tuple(f"point{i + 1}" for i in range(len(self.points)))
                write_track_json(stage / "points.json", names, (), self.tracks)
                write_track_csv(stage / "points.csv", names, self.tracks)
                for index, xy, visible in self.tracks:
                    writer.write(draw_points(self.frame(index), xy, visible, ()))
            else:
                for index in range(len(self.frames)):
                    ids = self.mask(index)
                    write_mask(stage / f"{index:05d}.png", ids)
                    writer.write(overlay_mask(self.frame(index), ids))
        count = len(self.tracks) or len(self.frames)
        return f"exported {count} frames to {out}"


def create_app(session: Session):
    """The Flask app serving the page and the session's JSON API."""
    try:
        from flask import Flask, Response, jsonify, request
    except ImportError:
        raise UsageError("the app needs Flask: pip install 'colortrack[app]'") from None

    app = Flask(__name__)
    page = resources.files("colortrack").joinpath("assets/app/index.html").read_bytes()

    @app.errorhandler(ColortrackError)
    def refused(error: ColortrackError):
        return jsonify(error=str(error)), 400

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise UsageError("expected a JSON object")
        return data

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.post("/api/open")
    def open_path():
        return jsonify(session.open(str(body().get("path", ""))))

    @app.post("/api/upload")
    def upload():
        file = request.files.get("video")
        if file is None or not file.filename:
            raise UsageError("choose a video file")
        folder = Path(tempfile.mkdtemp(prefix="colortrack-app-"))
        path = folder / Path(file.filename).name
        file.save(path)
        return jsonify(session.open(path))

    @app.get("/api/frame/<int:index>")
    def frame(index: int):
        session._check(index)
        return Response(session.frames[index], mimetype="image/jpeg")

    @app.get("/api/mask/<int:index>")
    def get_mask(index: int):
        ids = session.mask(index)
        if ids is None:
            return Response(status=204)
        return Response(_png(ids), mimetype="image/png")

    @app.put("/api/mask/<int:index>")
    def put_mask(index: int):
        try:
            image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
        except (OSError, ValueError):
            raise UsageError("the mask is not a readable PNG") from None
        session.set_mask(index, np.asarray(image)[..., 0])
        return jsonify(session.state())

    @app.post("/api/grabcut")
    def grabcut():
        data = body()
        session.grabcut(int(data.get("frame", 0)), list(data.get("box", [])),
                        int(data.get("object", 1)))
        return jsonify(session.state())

    @app.post("/api/points")
    def points():
        data = body().get("points", [])
        width, height = session.size
        if not all(0 <= x < width and 0 <= y < height for x, y in data):
            raise UsageError("points must lie inside the frame")
        session.points = [(float(x), float(y)) for x, y in data]
        return jsonify(session.state())

    @app.post("/api/track")
    def track():
        session.track(str(body().get("mode", "masks")))
        return jsonify(session.state()), 202

    @app.get("/api/points/<int:index>")
    def tracked_points(index: int):
        found = [t for t in session.tracks if t[0] == index]
        if not found:
            return jsonify(points=[])
        _, xy, visible = found[0]
        return jsonify(points=[[float(x), float(y), bool(v)]
                               for (x, y), v in zip(xy, visible, strict=True)])

    @app.post("/api/export")
    def export():
        data = body()
        return jsonify(message=session.export(str(data.get("folder", "")),
                                              bool(data.get("overwrite", False))))

    return app


def serve(propagator: LabelPropagator, video: str | Path | None = None, *,
          host: str = "127.0.0.1", port: int = 8080) -> None:
    """Open `video` (if given) and serve the page until Ctrl-C."""
    session = Session(propagator)
    if video is not None:
        session.open(video)
    app = create_app(session)
    print(f"colortrack app: open http://{host}:{port}/ in a browser (Ctrl-C stops)", flush=True)
    app.run(host=host, port=port, threaded=True)
