"""The app attacked as a web page the user visits would attack it: DNS rebinding (a foreign Host),
a cross-site form or fetch (a foreign Origin), and requests without the token. Each is refused
with a 4xx and changes nothing; the path rule keeps the page inside its folders."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.app_server import served
from tests.conftest import moving_texture, write_video

ATTACKS = {  # what a hostile page would try, one request each
    "read the state": ("GET", "/api/state", None),
    "read a frame": ("GET", "/api/frame/0", None),
    "open a file": ("POST", "/api/open", {"path": "clip.mp4"}),
    "replace the points": ("POST", "/api/points", {"points": [[1, 1]]}),
    "propagate": ("POST", "/api/track", {"mode": "masks"}),
    "export": ("POST", "/api/export", {"folder": "stolen", "overwrite": True}),
}


@pytest.fixture
def app(tmp_path):
    write_video(tmp_path / "clip.mp4", moving_texture(6, 64, 48), 10)
    with served(tmp_path) as app:
        app.session.open("clip.mp4")
        ids = np.zeros((48, 64), np.uint8)
        ids[10:30, 20:40] = 1
        app.session.set_mask(0, ids)
        yield app


def snapshot(app, base: Path) -> tuple:
    """What an attack could change: the session's state, the user's masks, the files."""
    masks = {i: m.tobytes() for i, m in app.session.masks.items()}
    return app.session.state(), masks, sorted(str(p) for p in base.rglob("*"))


def refused(app, base: Path, method: str, path: str, body, **kwargs) -> None:
    before = snapshot(app, base)
    status, answer = app.call(method, path, body, **kwargs)
    assert 400 <= status < 500, (status, answer)
    assert isinstance(answer, dict) and answer["error"], answer
    assert snapshot(app, base) == before


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_rebinding_page_gets_nothing(app, tmp_path, attack):
    """The attacker's domain now points at 127.0.0.1: the browser sends its Host (and, being
    same-origin to itself, its Origin); it has no token, but even with one the Host fails."""
    method, path, body = ATTACKS[attack]
    host = f"rebind.example:{app.port}"
    for token in (None, "ours"):
        refused(app, tmp_path, method, path, body, token=token,
                headers={"Host": host, "Origin": f"http://{host}"})


@pytest.mark.parametrize("attack", [a for a in ATTACKS if ATTACKS[a][0] == "POST"])
def test_a_cross_site_request_is_refused_even_with_the_token(app, tmp_path, attack):
    """A form or fetch from another site: the browser names that site in Origin and
    Sec-Fetch-Site. SameSite=Strict keeps the cookie back; were it sent, Origin still fails."""
    method, path, body = ATTACKS[attack]
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        refused(app, tmp_path, method, path, body, headers=headers)


def test_a_cross_site_form_cannot_replace_the_video(app, tmp_path):
    """A plain multipart form post (no preflight) once replaced the open video."""
    boundary = "x" + uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
            f"filename=\"a.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
    form += (tmp_path / "clip.mp4").read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Origin": "http://evil.example"}
    refused(app, tmp_path, "POST", "/api/upload", form, token=None, headers=headers)
    refused(app, tmp_path, "POST", "/api/upload", form, headers=headers)
    assert not list(app.session.roots.uploads.iterdir())


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_token_or_a_wrong_one_gets_nothing(app, tmp_path, attack):
    method, path, body = ATTACKS[attack]
    for token in (None, "", "guess", app.token[:-1], app.token + "x"):
        refused(app, tmp_path, method, path, body, token=token)


def test_the_token_is_taken_from_a_header_the_query_or_the_cookie(app):
    assert app.call("GET", "/api/state")[0] == 200
    assert app.call("GET", f"/api/state?token={app.token}", token=None)[0] == 200
    cookie = {"Cookie": f"colortrack-token-{app.port}={app.token}"}
    assert app.call("GET", "/api/state", token=None, headers=cookie)[0] == 200
    other_port = {"Cookie": f"colortrack-token-1={app.token}"}  # another app's cookie
    assert app.call("GET", "/api/state", token=None, headers=other_port)[0] == 403


def test_the_printed_url_sets_a_strict_cookie_and_nothing_allows_cors(app):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    connection.request("GET", f"/?token={app.token}",
                       headers={"Origin": "http://evil.example"})
    response = connection.getresponse()
    response.read()
    assert response.status == 303 and response.getheader("Location") == "/"
    cookie = response.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and app.token in cookie
    assert response.getheader("Access-Control-Allow-Origin") is None
    assert response.getheader("X-Frame-Options") == "DENY"
    connection.request("OPTIONS", "/api/open", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    response = connection.getresponse()
    response.read()
    assert response.status == 403 and response.getheader("Access-Control-Allow-Origin") is None
    assert app.call("GET", "/", token=None)[0] == 403  # the page itself needs the token


def test_paths_outside_the_folders_are_refused_alike_whether_or_not_they_exist(app, tmp_path):
    outside = tmp_path.parent / f"outside-{uuid.uuid4().hex}"
    outside.mkdir()
    write_video(outside / "secret.mp4", moving_texture(3, 64, 48), 10)
    (tmp_path / "link").symlink_to(outside)
    answers = []
    for typed in (str(outside / "secret.mp4"), str(outside / "missing.mp4"),
                  "../" + outside.name + "/secret.mp4", "link/secret.mp4", "/etc/passwd"):
        status, answer = app.call("POST", "/api/open", {"path": typed})
        assert status == 400 and answer["error"].startswith(f"{typed}: outside the folders")
        answers.append(answer["error"].replace(typed, "PATH"))
    assert len(set(answers)) == 1  # nothing tells an existing file from a missing one
    assert app.session.state()["video"] == str(tmp_path / "clip.mp4")
    app.session.propagate("masks")
    while app.session.state()["progress"]["running"]:
        pass
    for typed in (str(outside / "export"), "link/export", str(tmp_path), "."):
        status, answer = app.call("POST", "/api/export", {"folder": typed, "overwrite": True})
        assert status == 400, answer
    assert sorted(p.name for p in outside.iterdir()) == ["secret.mp4"]
    assert app.call("POST", "/api/export", {"folder": "masks"})[0] == 200  # inside: fine


def test_the_server_warns_off_loopback_and_deletes_uploads_when_stopped(tmp_path):
    """The real command: `--host 0.0.0.0` warns and still needs the token; an uploaded video
    lives in a private folder that is gone once SIGTERM stops the server."""
    pytest.importorskip("waitress")
    write_video(tmp_path / "clip.mp4", moving_texture(4, 64, 48), 10)
    (temp := tmp_path / "temp").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "colortrack", "app", "--method", "identity", "--host", "0.0.0.0",
         "--port", "0", "--max-upload-mb", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(temp)})
    try:
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        assert found, (line, process.stderr.read() if process.poll() is not None else "")
        from tests.app_server import Served

        app = Served(None, int(found[1]), found[2])
        assert app.call("GET", "/api/state", token=None)[0] == 403
        boundary = "x" + uuid.uuid4().hex
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
                f"filename=\"a.mp4\"\r\n\r\n").encode()
        data = form + (tmp_path / "clip.mp4").read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, state = app.call("POST", "/api/upload", data, headers=kind)
        assert status == 200 and state["frames"] == 4, state
        big = form + b"\0" * (3 * 2**19) + f"\r\n--{boundary}--\r\n".encode()
        status, answer = app.call("POST", "/api/upload", big, headers=kind)
        assert status == 413 and "limit of 1 MB" in answer["error"]
        uploads = [p for p in temp.iterdir() if p.name.startswith("colortrack-app-")]
        assert len(uploads) == 1 and len(list(uploads[0].iterdir())) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert err.startswith("warning: serving on 0.0.0.0"), err
    assert not list(temp.iterdir())
