"""What DomainGuard's pages answer: HTML or JSON (:func:`wants_json`), and redirects that
stay on this site (:func:`safe_next`, :func:`redirect_next`) for ``next`` parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import redirect, request

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse


def wants_json() -> bool:
    """Whether the client prefers JSON to HTML.

    ``Accept`` decides (quality, then specificity: axios' ``application/json, */*`` is JSON,
    a browser's ``text/html, ... */*;q=0.8`` is HTML). A tie, as with ``*/*`` or no header,
    goes to JSON when the request itself sends JSON (``fetch``), to HTML otherwise.
    """
    accept = request.accept_mimetypes
    if request.is_json:
        return accept.best_match(("application/json", "text/html")) != "text/html"
    return accept.best_match(("text/html", "application/json")) == "application/json"


def safe_next(target: str | None) -> str | None:
    """``target`` as a same-site path to redirect to, or ``None`` when it may lead elsewhere.

    Accepts ``/path?query`` and absolute http(s) URLs on this very host (reduced to their
    path). Refuses ``//evil``, ``https://evil``, backslashes (browsers read ``\\`` as ``/``),
    control characters and whitespace (browsers drop them, turning ``/\\t/evil`` into
    ``//evil``), and every other scheme (``javascript:``, ``data:``).
    """
    if not target or len(target) > 2048:
        return None
    if "\\" in target or any(ord(c) < 0x21 or c == "\x7f" for c in target):
        return None
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("http", "https") or parts.netloc != request.host:
            return None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//"):
        return None
    return target


def redirect_next(target: str | None, default: str | None = None) -> BaseResponse:
    """Redirect to ``target`` when it is same-site, else to ``default`` or the app's root."""
    return redirect(safe_next(target) or default or (request.script_root or "") + "/")
