"""The app served by waitress on a free localhost port, and raw HTTP calls to it.

Raw (http.client) so that a test can send exactly the headers an attacker would: any Host,
any Origin, no token.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")
waitress = pytest.importorskip("waitress")

from colortrack.app import Guard, Roots, Session, create_app  # noqa: E402
from colortrack.track.tracking import make_propagator  # noqa: E402


@dataclass
class Served:
    session: Session
    port: int
    token: str

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "ours",
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body or raw bytes); `token` "ours" sends the right one as a header."""
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"token {self.token if token == 'ours' else token}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body, sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if "json" in (response.getheader("Content-Type") or ""):
            return response.status, json.loads(data)
        return response.status, data

    def state(self) -> dict[str, Any]:
        status, state = self.call("GET", "/api/state")
        assert status == 200, state
        return state


@contextlib.contextmanager
def served(base: Path, method: str = "identity", *, max_upload_mb: float = 512
           ) -> Iterator[Served]:
    roots = Roots(base)
    session = Session(make_propagator(method), roots)
    guard = Guard("127.0.0.1")
    server = waitress.create_server(create_app(session, guard, max_upload_mb=max_upload_mb),
                                    host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Served(session, server.effective_port, guard.token)
    finally:
        server.trigger.pull_trigger(server.close)  # closed in the loop's thread, not under it
        thread.join(10)
        server.task_dispatcher.shutdown()
        roots.close()
