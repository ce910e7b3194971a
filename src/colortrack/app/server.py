"""The app's web server: the page, the session's JSON API, and waitress to serve them.

Every request passes the `Guard` first (security.py). Every error comes back as
{"error": message} with a 4xx status (413 for an upload over the limit) and is shown on the
page; a defect that slips through is still JSON, with status 500.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from colortrack.app.paths import Roots
from colortrack.app.security import HEADERS, Guard, is_loopback
from colortrack.app.session import Session, finite, png
from colortrack.data.files import IMAGE_ERRORS, reason
from colortrack.errors import ColortrackError, UsageError
from colortrack.track.tracking import LabelPropagator

DEFAULT_UPLOAD_MB = 512
MAX_JSON = 2**20  # bytes of a JSON body: far above any the page sends
log = logging.getLogger(__name__)


def _integer(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{key} must be a whole number")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text")
    return value


def _xy(item: Any, what: str) -> tuple[float, float]:
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise UsageError(f"{what} must be a pair of numbers [x, y]")
    return finite(item[0], what), finite(item[1], what)


def _mask(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A mask the page sent: a PNG of the video's size, ids in its red (or palette) channel."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.format != "PNG":
                raise UsageError("a mask must be a PNG: lossy formats change object ids")
            if image.size != size:
                raise UsageError(f"mask is {image.size[0]}x{image.size[1]}, the video "
                                 f"{size[0]}x{size[1]}")
            if image.mode in ("P", "L"):
                return np.asarray(image)
            return np.asarray(image.convert("RGB"))[..., 0]
    except IMAGE_ERRORS:
        raise UsageError("the mask is not a readable PNG") from None


def create_app(session: Session, guard: Guard, *, max_upload_mb: float = DEFAULT_UPLOAD_MB):
    """The Flask app serving the page and the session's JSON API, behind `guard`."""
    try:
        from flask import Flask, Response, jsonify, redirect, request
        from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
    except ImportError:
        raise UsageError("the app needs Flask: pip install 'colortrack[app]'") from None

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2**20)
    page = resources.files("colortrack.app").joinpath("static/index.html").read_bytes()

    def refuse(status: int, message: str):
        return jsonify(error=message), status

    @app.before_request
    def check():
        host = request.headers.get("Host", "")
        if not guard.allows_host(host):
            return refuse(403, "this address is not served; open the URL that `colortrack "
                          "app` printed")
        if not guard.same_site(request.method, host, request.headers.get("Origin"),
                               request.headers.get("Sec-Fetch-Site")):
            return refuse(403, "requests from other sites are refused")
        offered = (request.args.get("token")
                   or guard.from_header(request.headers.get("Authorization", ""))
                   or request.cookies.get(guard.cookie_name(host)))
        if not guard.authenticated(offered):
            return refuse(403, "a valid token is needed: open the URL with ?token=... that "
                          "`colortrack app` printed")
        return None

    @app.after_request
    def protect(response):
        response.headers.update(HEADERS)
        return response

    @app.errorhandler(ColortrackError)
    def refused(error: ColortrackError):
        return refuse(400, str(error))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception):
        return refuse(413, f"the upload is larger than the limit of {max_upload_mb:g} MB "
                      "(colortrack app --max-upload-mb)")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return refuse(error.code or 400, error.description or error.name)

    @app.errorhandler(Exception)
    def defect(error: Exception):  # a bug: still a message the page can show
        log.exception("app request failed")
        return refuse(500, f"internal error ({type(error).__name__}: {error})")

    def current(state: dict[str, Any]) -> dict[str, Any]:
        """The session's state, and the upload limit the page checks before uploading."""
        return {**state, "max_upload_mb": max_upload_mb}

    def body() -> dict[str, Any]:
        if (request.content_length or 0) > MAX_JSON:
            raise RequestEntityTooLarge()
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise UsageError("expected a JSON object")
        return data

    @app.get("/")
    def index():
        if "token" in request.args:  # the printed URL: keep the token as a cookie, not in view
            response = redirect("/", 303)
            response.set_cookie(guard.cookie_name(request.host), guard.token, httponly=True,
                                samesite="Strict")
            return response
        return Response(page, mimetype="text/html")

    @app.get("/api/state")
    def state():
        return jsonify(current(session.state()))

    @app.post("/api/open")
    def open_path():
        return jsonify(current(session.open(_text(body(), "path"))))

    @app.post("/api/upload")
    def upload():
        file = request.files.get("video")
        if file is None or not file.filename:
            raise UsageError("choose a video file")
        path = session.roots.new_upload(file.filename)
        try:
            file.save(path)
            return jsonify(current(session.open_path(path)))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @app.get("/api/frame/<int:index>")
    def frame(index: int):
        return Response(session.frame_jpeg(index), mimetype="image/jpeg")

    @app.get("/api/mask/<int:index>")
    def get_mask(index: int):
        ids = session.mask(index)
        if ids is None:
            return Response(status=204)
        return Response(png(ids), mimetype="image/png")

    @app.put("/api/mask/<int:index>")
    def put_mask(index: int):
        session.check_frame(index)
        session.set_mask(index, _mask(request.get_data(), session.size))
        return jsonify(current(session.state()))

    @app.post("/api/grabcut")
    def grabcut():
        data = body()
        box = data.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise UsageError("box must be [x0, y0, x1, y1]")
        session.grabcut(_integer(data, "frame", 0), tuple(finite(v, "box") for v in box),
                        _integer(data, "object", 1))
        return jsonify(current(session.state()))

    @app.post("/api/points")
    def points():
        data = body().get("points", [])
        if not isinstance(data, list):
            raise UsageError("points must be a list of [x, y]")
        session.set_points([_xy(item, "a point") for item in data])
        return jsonify(current(session.state()))

    @app.post("/api/track")
    def track():
        session.propagate(_text(body(), "mode") or "masks")
        return jsonify(current(session.state())), 202

    @app.get("/api/points/<int:index>")
    def tracked_points(index: int):
        return jsonify(points=session.tracked_points(index))

    @app.post("/api/export")
    def export():
        data = body()
        overwrite = data.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise UsageError("overwrite must be true or false")
        return jsonify(message=session.export(_text(data, "folder"), overwrite))

    return app


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM ends the server as Ctrl-C does, so that the uploads are deleted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(propagator: LabelPropagator, video: str | Path | None = None, *,
          host: str = "127.0.0.1", port: int = 8080,
          max_upload_mb: float = DEFAULT_UPLOAD_MB) -> None:
    """Open `video` (if given) and serve the page until Ctrl-C or SIGTERM; uploads are
    deleted on the way out."""
    try:
        from waitress import create_server
    except ImportError:
        raise UsageError("the app needs waitress: pip install 'colortrack[app]'") from None
    if not max_upload_mb > 0:
        raise UsageError("--max-upload-mb must be above 0")
    roots = Roots(Path.cwd(), video)
    try:
        session = Session(propagator, roots)
        if video is not None:
            session.open_path(Path(os.path.realpath(video)))
        guard = Guard(host)
        app = create_app(session, guard, max_upload_mb=max_upload_mb)
        try:
            server = create_server(app, host=host, port=port, threads=8, ident="colortrack",
                                   max_request_body_size=int(max_upload_mb * 2**20) + 2**20)
        except OSError as error:
            raise UsageError(f"cannot serve on {host}:{port} ({reason(error)})") from None
        if not is_loopback(host):
            print(f"warning: serving on {host}: anyone who can reach this machine and has the "
                  "token can read and write the files this app may use", file=sys.stderr)
        print(f"colortrack app: open {_url(host, server.effective_port)}?token={guard.token} "
              f"in a browser (Ctrl-C stops); it may use files under {roots.describe()}",
              flush=True)
        with _stopped_by_sigterm():
            try:
                server.run()  # returns on Ctrl-C (and SystemExit)
            finally:
                server.close()
    finally:
        roots.close()
