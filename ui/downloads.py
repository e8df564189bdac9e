"""Files made on click are served only to the browser (and login) that clicked, and only for a
short while.

Streamlit serves a download button's file at ``/media/<id>.<ext>`` to any client that asks, with
no check of the login. A file whose data is made on click (``ui.auth.audited_file``) has a URL
that only the clicking session learns (over its own websocket, after the click). This module ties
that URL to the clicking browser: the file is registered with a fingerprint of the cookies of the
session that drew the button (Streamlit's XSRF token, which names the browser, and the login
cookie ``_streamlit_user*`` when login is configured), and a request for it is served only when it
carries the same cookies; any other client (a shared link, a proxy log, a browser history entry
opened elsewhere) gets 404. After :data:`TTL_SECONDS` the file is removed for everyone.

Mechanism (Streamlit 1.67): the media store's ``get_file``, which the ``/media`` route calls for
every request (``_media_endpoint``, whose ``request`` is read from the calling frame), is wrapped
once per server process; its ``get_url``, which reads the file to name its URL, is let through.
Files are recognised by the SHA-256 of their bytes. The browser asks twice (Streamlit's frontend
checks the URL with ``fetch`` and then follows a download link), both with its cookies. When the
calling request cannot be found, a registered file is refused (fail closed). Re-check on a
Streamlit upgrade: tests/browser/test_downloads_browser.py catches a change.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Mapping

from streamlit.runtime import Runtime
from streamlit.runtime.media_file_storage import MediaFileKind, MediaFileStorageError

TTL_SECONDS = 120.0
XSRF_COOKIE, USER_COOKIE = "_streamlit_xsrf", "_streamlit_user"
_lock = threading.Lock()
_pending: dict[str, tuple[str, float]] = {}  # SHA-256 of a file's bytes -> (browser fingerprint, expiry)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def browser_fingerprint(cookies: Mapping[str, str]) -> str:
    """A fingerprint of the browser and login behind a request: the XSRF token (unmasked: the
    cookie's mask changes, its token does not) and the login cookie(s)."""
    from streamlit.web.server.starlette.starlette_app_utils import decode_xsrf_token_string

    raw = cookies.get(XSRF_COOKIE) or ""
    token = decode_xsrf_token_string(raw)[0] if raw else None
    login = "\x1e".join(f"{k}={v}" for k, v in sorted(cookies.items()) if k.startswith(USER_COOKIE))
    return _digest(f"{token.hex() if token else raw}\x1f{login}".encode())


def serve_to(fingerprint: str, data: bytes | str) -> bytes | str:
    """Register ``data`` (what a download callable returns) as a file served only to requests with
    ``fingerprint`` until :data:`TTL_SECONDS` from now; returns ``data``."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    now = time.monotonic()
    with _lock:
        for key in [k for k, (_, until) in _pending.items() if until < now]:
            del _pending[key]
        _pending[_digest(raw)] = (fingerprint, now + TTL_SECONDS)
    return data


def _calling_request():
    """The Starlette request of the ``/media`` route calling ``get_file`` (None if not found)."""
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return None
        if frame.f_code.co_name == "_media_endpoint":
            return frame.f_locals.get("request")
        frame = frame.f_back
    return None


def guard_media_store() -> None:
    """Wrap the running server's media store so registered files go only to their browser (idempotent)."""
    if not Runtime.exists():
        return
    storage = getattr(Runtime.instance().media_file_mgr, "_storage", None)
    if storage is None or getattr(storage, "_browser_guard", False) or not hasattr(storage, "get_url"):
        return
    original, original_url = storage.get_file, storage.get_url
    building_url = threading.local()

    def get_url(file_id: str) -> str:
        building_url.active = True
        try:
            return original_url(file_id)
        finally:
            building_url.active = False

    def get_file(filename: str):
        media = original(filename)
        if media.kind != MediaFileKind.DOWNLOADABLE or not _pending or getattr(building_url, "active", False):
            return media
        with _lock:
            entry = _pending.get(_digest(media.content))
        if entry is None:
            return media
        fingerprint, until = entry
        if until < time.monotonic():
            storage.delete_file(filename.rsplit(".", 1)[0])
            raise MediaFileStorageError(f"download {filename} expired")
        request = _calling_request()
        if request is None or browser_fingerprint(request.cookies) != fingerprint:
            raise MediaFileStorageError(f"download {filename} belongs to another browser")
        return media

    storage.get_file, storage.get_url = get_file, get_url
    storage._browser_guard = True
