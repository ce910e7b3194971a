"""Who may use the app: checks run before every request, as Jupyter's server does them.

- Host: only the loopback names and the bound address are served, so a web page whose domain
  an attacker re-points at 127.0.0.1 (DNS rebinding) gets refused rather than same-origin.
- Token: a secret made at launch, in the URL printed (`/?token=...`). Opening that URL sets a
  cookie (SameSite=Strict, HttpOnly) and the page's own calls carry it; scripts may send
  `Authorization: token ...` or `?token=...` instead. Compared in constant time.
- Origin: a state-changing request (anything but GET and HEAD) whose Origin or Sec-Fetch-Site
  says it comes from another site is refused, so a cross-site form cannot post.
- No CORS headers are ever sent, and responses forbid framing, sniffing and referrers.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
           "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
           "frame-ancestors 'none'", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hostname(header: str) -> str:
    """The name in a Host header or an origin's netloc, without port or IPv6 brackets."""
    try:
        return urlsplit(f"//{header}").hostname or ""
    except ValueError:  # an unclosed bracket
        return ""


@dataclass(frozen=True)
class Guard:
    """The checks for a server bound to `host`; `token` defaults to a fresh random one."""

    host: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def allows_host(self, header: str) -> bool:
        name = hostname(header)
        if not name:
            return False
        if self.host in ("0.0.0.0", "::", ""):  # every interface: any name, the token decides
            return True
        return is_loopback(name) or name == hostname(self.host)

    def authenticated(self, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(), self.token.encode())

    @staticmethod
    def from_header(authorization: str) -> str | None:
        """The token of an `Authorization: token ...` header."""
        kind, _, value = authorization.partition(" ")
        return value.strip() if kind.lower() == "token" else None

    @staticmethod
    def same_site(method: str, host: str, origin: str | None, fetch_site: str | None) -> bool:
        """Whether a request may change state: a safe method, or one from the page itself."""
        if method in SAFE_METHODS:
            return True
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        if origin is None:  # not sent by a browser (curl, scripts): the token decides
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()

    def cookie_name(self, host: str) -> str:
        """One cookie per port: browsers share a host's cookies between its ports."""
        try:
            port = urlsplit(f"//{host}").port or 80
        except ValueError:
            port = 0
        return f"colortrack-token-{port}"
