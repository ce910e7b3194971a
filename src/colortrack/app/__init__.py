"""`colortrack app`: annotate a video in the browser, track, correct, export.

A local web server (server.py, behind the checks of security.py) holds one session
(session.py) and serves one page (static/index.html, no asset from the internet) that draws
on a canvas and calls the session's JSON API. What the page may read and write is the path
rule of paths.py.
"""

from colortrack.app.paths import Roots
from colortrack.app.security import Guard
from colortrack.app.server import create_app, serve
from colortrack.app.session import Session

__all__ = ["Guard", "Roots", "Session", "create_app", "serve"]
