"""Serve the local review page (:mod:`steps.local_review.page`) on a loopback address until every record
is answered.

The WSGI server is Werkzeug's threaded server (Flask's own): one reviewer on this machine, a handful of
requests a minute. It binds 127.0.0.1 by default (any loopback address; nothing else is accepted), on the
given port or on a free one with port 0, prints the page's URL, and stops cleanly: once every loop is
answered (after the done page has been sent, or :data:`DONE_PAGE_WAIT_S`), on a timeout, or when the
caller is interrupted (Ctrl-C), it stops accepting, closes its socket and returns.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from threading import Event, Thread
from typing import Any

from werkzeug.serving import WSGIRequestHandler, get_sockaddr, make_server, select_address_family

from core.errors import InputError
from steps.local_review.loops import LocalHumanLoops
from steps.local_review.page import ReviewQueue, create_review_app, reference_images

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DONE_PAGE_WAIT_S = 5.0  # after the last answer, how long the server waits for the browser to fetch /done
POLL_S = 0.2


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, logging to this module's logger at DEBUG (not to stderr), and closing idle
    keep-alive connections after 30 s so no thread outlives the page for long."""

    timeout = 30

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 (Werkzeug's signature)
        log.debug("review page %s: " + message, type, *args)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Raises:
        InputError: the port is taken or cannot be bound (names ``review.local_review_port`` and the fix).
    """
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted page reuses its port at once
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(64)
    except OSError as err:
        sock.close()
        raise InputError(f"the local review page cannot listen on {host}:{port} ({err.strerror or err}); set "
                         f"review.local_review_port to a free port, or 0 for any free port") from None
    return sock


def page_url(host: str, port: int) -> str:
    """``http://<host>:<port>/`` (IPv6 hosts in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_local_review(loops: LocalHumanLoops, names: Sequence[str], image_resolver: Callable[[str], Path],
                       host: str = "127.0.0.1", port: int = 0, timeout_s: float | None = None,
                       on_ready: Callable[[str], Any] | None = None,
                       references_dir: str | Path | None = None) -> None:
    """Serve the review page for the local loops ``names`` until every one is answered (or ``timeout_s``).

    Returns at once when no loop is pending. Answers are written by :meth:`LocalHumanLoops.answer` (the A2I
    ``answerContent`` shape; see :mod:`steps.local_review.page`).

    Args:
        loops, names: the loops to review, in manifest order (already started).
        image_resolver: ``image_ref -> Path`` of a crop (``LocalImageProbe.resolve``).
        host: a loopback address (127.0.0.1, localhost or ::1).
        port: 0..65,535; 0 picks a free port.
        timeout_s: give up after this many seconds (``review.local_review_timeout_s``); ``None`` waits.
        on_ready: called with the page's URL once the server listens (the URL is also printed and logged).
        references_dir: ``<folder>/<character>/`` reference images shown beside each crop (the dataset's
            ``references/`` folder).

    Raises:
        InputError: ``host`` is not a loopback address; the port is taken (names the setting and the fix);
            ``timeout_s`` passed with loops unanswered (the answers given so far stay written).
    """
    if host not in LOOPBACK:
        raise InputError(f"the local review page serves only on the loopback interface, not {host!r}")
    queue = ReviewQueue(loops, names, image_resolver, reference_images(references_dir))
    pending = queue.pending()
    if not pending:
        return
    done_page_sent = Event()
    app = create_review_app(queue, on_done_page=done_page_sent.set)
    listener = _listen(host, port)
    try:  # Werkzeug takes the bound socket (it would sys.exit on a bind error of its own)
        server = make_server(host, port, app, threaded=True, request_handler=_RequestHandler, fd=listener.fileno())
    finally:
        listener.close()  # the server holds a duplicate
    url = page_url(host, server.port)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_S}, name="local-review",
                    daemon=True)
    thread.start()
    print(f"Review page: {url} ({len(pending)} of {len(queue.names)} records to review; keys: a approve, "
          f"e edit, r reject, n next). The run waits for every answer.", flush=True)
    log.info("review %d records at %s", len(pending), url)
    try:
        if on_ready is not None:
            on_ready(url)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        answered_here = False
        while not queue.finished():
            if deadline is not None and time.monotonic() > deadline:
                left = len(queue.pending())
                raise InputError(f"local review timed out after {timeout_s:g} s with {left} records unanswered "
                                 f"(review.local_review_timeout_s); the answers given are kept")
            if queue.answered.wait(POLL_S):
                answered_here = True
                queue.answered.clear()
        if answered_here:  # let the browser fetch the done page before the server goes
            done_page_sent.wait(DONE_PAGE_WAIT_S)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    log.info("review page %s closed: every record is answered", url)
