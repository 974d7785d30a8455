"""The local review page: a Flask application over :class:`~steps.local_review.loops.LocalHumanLoops`.

One page per record (``/item/<loop>``): the crop, the character's reference images beside it, the caption in
an editable field, approve / save edit / reject, keyboard shortcuts (:data:`SHORTCUTS`), the progress
(``12 of 40 reviewed``) and a strip of the neighbouring records; ``/done`` sums the decisions once every
record is answered. Templates: ``steps/templates/review/`` (Jinja2, autoescaped).

An answer is written with :meth:`LocalHumanLoops.answer` in the ``answerContent`` shape of the A2I worker
template (``{"approve": {"on": bool}, "edit": {...}, "reject": {...}, "caption", "reason"}``), so
:func:`steps.a2i_loops.decision_from_output` reads local and A2I answers alike and the HumanReview outputs
(``reviewed_manifest.jsonl``, ``train.jsonl``) do not depend on where the review happened. An answered
record is final (as an A2I loop is); its page shows the decision.

The page is for one reviewer on this machine: it refuses requests whose ``Host`` is not a loopback name
(Flask's ``TRUSTED_HOSTS``, against DNS rebinding) and answers without the page's per-server token (a form
posted by another site).
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template, request, send_file, url_for
from PIL import Image

from core.config import NOVA_CANVAS_CAPTION_MAX_CHARS, NOVA_CANVAS_CAPTION_MIN_CHARS
from steps.a2i_loops import decision_from_output
from steps.local_review.loops import LocalHumanLoops
from steps.review import ReviewDecision

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "review"
REFERENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_REFERENCES_SHOWN = 6
STRIP_RADIUS = 8  # records shown on each side of the current one in the queue strip
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CHOICES = ("approve", "edit", "reject")
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("a", "approve"),
    ("e", "edit the caption, then Enter saves it (Esc leaves the field)"),
    ("r", "reject (type a reason first, if you like: Enter in the reason field rejects too)"),
    ("n / j", "next record to review"),
    ("p / k", "previous record to review"),
)


def reference_images(folder: str | Path | None) -> dict[str, list[Path]]:
    """``{character: [image paths]}`` from ``folder/<character>/*`` (PNG, JPEG, WebP; sorted by name).

    ``folder`` is the dataset's ``references/`` folder (ExtractFrames writes the resolved references there and
    CaptionImages copies them beside the crops) or a ``--characters`` folder. ``None`` or a missing folder
    gives ``{}``; the page then says that no reference image was found.
    """
    if folder is None or not Path(folder).is_dir():
        return {}
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in REFERENCE_SUFFIXES)
        if images:
            out[sub.name] = images
    return out


@dataclass
class ReviewQueue:
    """The records one review page serves, in manifest order.

    Attributes:
        loops: where the loops live and answers are written.
        names: the loop names, in manifest order (every one started).
        image_resolver: ``image_ref -> Path`` of the crop (for example ``LocalImageProbe.resolve``).
        references: :func:`reference_images` of the dataset.
    """

    loops: LocalHumanLoops
    names: Sequence[str]
    image_resolver: Callable[[str], Path]
    references: Mapping[str, Sequence[Path]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.names = list(self.names)
        self._index = {n: i for i, n in enumerate(self.names)}

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def pending(self) -> list[str]:
        """Loops without an answer (InProgress), in manifest order."""
        return [n for n in self.names if not self.loops.status(n).terminal]

    def finished(self) -> bool:
        """Whether every loop is Completed, Stopped or Failed."""
        return all(self.loops.status(n).terminal for n in self.names)

    def neighbour(self, name: str | None, step: int) -> str | None:
        """The next (``step`` 1) or previous (-1) pending loop after ``name``, wrapping; ``None`` when no other
        loop is pending (``name`` itself is skipped unless it is the only one left)."""
        pending = set(self.pending())
        if not pending:
            return None
        start = self._index.get(name, -1 if step > 0 else 0) if name is not None else -1
        count = len(self.names)
        for offset in range(1, count + 1):
            candidate = self.names[(start + step * offset) % count]
            if candidate in pending and candidate != name:
                return candidate
        return name if name in pending else None

    def decision(self, name: str) -> ReviewDecision | None:
        """The decision an answered loop yields (as HumanReview will read it), else ``None``."""
        output = self.loops.output(name)
        if output is None:
            return None
        content = self.loops.input_content(name)
        return decision_from_output(output, str(content.get("itemId")), str(content.get("caption") or ""), name)

    def counts(self) -> Counter:
        """``Counter`` of decisions (approved / edited / rejected) of the answered loops, plus ``stopped``."""
        counts: Counter = Counter()
        for name in self.names:
            status = self.loops.status(name)
            if status.status == "Completed":
                found = self.decision(name)
                counts[found.decision if found else "rejected"] += 1
            elif status.terminal:
                counts["stopped"] += 1
        return counts

    def answer(self, name: str, choice: str, caption: str, reason: str) -> bool:
        """Write the answer unless the loop already has one; ``True`` when written.

        Raises:
            ValueError: ``choice`` is not approve, edit or reject.
        """
        if choice not in CHOICES:
            raise ValueError(f"decision must be one of {', '.join(CHOICES)}, got {choice!r}")
        with self.lock:  # a double click posts twice: the first answer stands
            if self.loops.status(name).terminal:
                return False
            content: dict[str, Any] = {c: {"on": c == choice} for c in CHOICES}
            content["caption"] = caption
            content["reason"] = reason
            self.loops.answer(name, content)
        self.answered.set()
        return True

    def item(self, name: str) -> dict[str, Any]:
        """What the item page shows of one loop."""
        content = self.loops.input_content(name)
        character = str(content.get("characterName") or content.get("character") or "")
        size = None
        try:
            with Image.open(self.image_resolver(str(content["taskObject"]))) as image:
                size = image.size
        except (OSError, KeyError, ValueError):
            pass
        refs = self.references.get(character, [])
        return {
            "name": name,
            "number": self._index[name] + 1,
            "item_id": content.get("itemId"),
            "character": content.get("character") or character,
            "character_name": character,
            "caption": content.get("caption") or "",
            "size": size,
            "references": [url_for("reference", character=character, index=k)
                           for k in range(min(len(refs), MAX_REFERENCES_SHOWN))],
            "references_total": len(refs),
            "decision": self.decision(name),
            "status": self.loops.status(name).status,
        }

    def strip(self, name: str) -> list[dict[str, Any]]:
        """The queue strip: loops around ``name`` with their state (``pending``, a decision, ``stopped``)."""
        at = self._index[name]
        out = []
        for i in range(max(0, at - STRIP_RADIUS), min(len(self.names), at + STRIP_RADIUS + 1)):
            other = self.names[i]
            status = self.loops.status(other)
            found = self.decision(other) if status.status == "Completed" else None
            state = found.decision if found else ("pending" if not status.terminal else "stopped")
            out.append({"name": other, "number": i + 1, "state": state, "current": other == name})
        return out


def create_review_app(queue: ReviewQueue, on_done_page: Callable[[], None] | None = None) -> Flask:
    """The Flask application of the review page.

    Routes: ``GET /`` (the first pending record, or ``/done``), ``GET/POST /item/<loop>`` (show, answer),
    ``GET /image/<loop>`` (the crop), ``GET /reference/<character>/<k>``, ``GET /done``. A POST takes the
    form fields ``decision`` (approve, edit, reject), ``caption``, ``reason`` and ``token``, and answers 303
    to the next pending record (or ``/done``); 400 for a bad decision, 403 for a wrong token, 404 for an
    unknown loop. ``on_done_page()`` is called once the done page has been sent with every record answered.
    """
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=None)
    app.config["TRUSTED_HOSTS"] = list(LOOPBACK_HOSTS)
    token = secrets.token_urlsafe(16)

    def progress() -> dict[str, Any]:
        counts = queue.counts()
        reviewed = sum(counts.values())
        return {"reviewed": reviewed, "total": len(queue.names), "counts": counts,
                "percent": round(100 * reviewed / max(1, len(queue.names)))}

    def next_url(name: str | None) -> str:
        found = queue.neighbour(name, 1)
        return url_for("item", name=found) if found else url_for("done")

    @app.get("/")
    def index() -> Any:
        pending = queue.pending()
        return redirect(url_for("item", name=pending[0]) if pending else url_for("done"), code=303)

    @app.route("/item/<name>", methods=["GET", "POST"])
    def item(name: str) -> Any:
        if name not in queue:
            abort(404)
        if request.method == "POST":
            if not secrets.compare_digest(request.form.get("token", ""), token):
                abort(403)
            try:
                queue.answer(name, request.form.get("decision", ""), request.form.get("caption", ""),
                             request.form.get("reason", ""))
            except ValueError:
                abort(400)
            return redirect(next_url(name), code=303)
        after, before = queue.neighbour(name, 1), queue.neighbour(name, -1)
        return render_template(
            "item.html", item=queue.item(name), progress=progress(), strip=queue.strip(name), token=token,
            next_url=url_for("item", name=after) if after else None,
            prev_url=url_for("item", name=before) if before else None,
            shortcuts=SHORTCUTS, caption_min=NOVA_CANVAS_CAPTION_MIN_CHARS,
            caption_max=NOVA_CANVAS_CAPTION_MAX_CHARS)

    @app.get("/image/<name>")
    def image(name: str) -> Any:
        if name not in queue:
            abort(404)
        path = Path(queue.image_resolver(str(queue.loops.input_content(name)["taskObject"])))
        if not path.is_file():
            abort(404)
        return send_file(path, max_age=3600)

    @app.get("/reference/<character>/<int:index>")
    def reference(character: str, index: int) -> Any:
        refs = queue.references.get(character) or []
        if not 0 <= index < len(refs):
            abort(404)
        return send_file(refs[index], max_age=3600)

    @app.get("/done")
    def done() -> Any:
        pending = queue.pending()
        response = app.make_response(render_template(
            "done.html", progress=progress(), pending=len(pending),
            first_pending=url_for("item", name=pending[0]) if pending else None))
        if not pending and on_done_page is not None:
            response.call_on_close(on_done_page)
        return response

    return app
