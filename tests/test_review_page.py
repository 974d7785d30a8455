"""The local review page in a real headless browser: Playwright driving Debian's chromium.

A review set is cut from the real clips of ``../shared/media`` (the hand-labelled body boxes of
``boxes.json``) with the references of ``media/references`` in the dataset's ``references/`` folder, as
CaptionImages leaves them. The HumanReview handler (``ReviewMode=a2i``, ``review.local_review_page``) serves
the page; the browser approves (key ``a`` and a click), skips (``n``) and comes back, edits a caption (``e``,
typing, Enter) and rejects (``r``); then ``train.jsonl`` and ``reviewed_manifest.jsonl`` are checked.

Needs the ``playwright`` package (setup.py's dev extra) and chromium (``apt-get install chromium``); no browser is
downloaded (``executable_path``). Without them the test is skipped on a developer's machine and fails under CI
(``STORYBOARD_REQUIRE_MEDIA=1`` or ``CI=true``). ``STORYBOARD_SCREENSHOTS=DIR`` keeps the screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import av
import pytest
from conftest import media_required
from PIL import Image

from containers.lambda_handlers.local import CALLBACK_HANDLERS
from core.config import parse_config

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# (clip, character, seconds): full views of each character, none from the seconds its references come from.
SHOTS = [("clips/bbb_30s.mp4", "bunny", (2, 6, 29)), ("clips/sintel_26s.mp4", "sintel", (14, 16, 22))]
CAPTIONS = {"bunny": "Buck, a big grey rabbit, {scale} in a green meadow",
            "sintel": "Sintel, a young woman with short hair, {scale} in a snowy mountain landscape"}


def _chromium() -> str:
    """The chromium binary and the playwright package, or a skip (a failure under CI) naming what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[dev]')")
    chromium = os.environ.get("STORYBOARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        message = f"the review page's browser test needs {' and '.join(missing)}"
        if media_required():
            pytest.fail(message + "; STORYBOARD_REQUIRE_MEDIA=1 or CI=true: it must run in CI", pytrace=False)
        pytest.skip(message)
    return chromium


def _review_set(media: Path, boxes: dict, folder: Path) -> Path:
    """A labelling manifest of real crops (each labelled body box padded by 15%) and the references beside it."""
    rows = []
    for clip, character, seconds in SHOTS:
        info = boxes["clips"][clip]
        wanted = {round(t * info["fps"]): t for t in seconds}
        with av.open(str(media / clip)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index > max(wanted):
                    break
                if index not in wanted:
                    continue
                t = wanted[index]
                x, y, w, h = info["frames"][str(t)][character]["body"]
                pad_x, pad_y = int(0.15 * w), int(0.15 * h)
                image = frame.to_image().crop((max(0, x - pad_x), max(0, y - pad_y), x + w + pad_x, y + h + pad_y))
                crop_id = f"{character}_{Path(clip).stem}_t{t:02d}"
                (folder / "crops").mkdir(parents=True, exist_ok=True)
                image.save(folder / "crops" / f"{crop_id}.jpg", quality=92)
                scale = "close-up" if h > 0.6 * info["size"][1] else "full shot"
                rows.append({"image_ref": f"crops/{crop_id}.jpg", "alt_text": CAPTIONS[character].format(scale=scale),
                             "crop_id": crop_id, "character": character, "needs_review": False})
        shutil.copytree(media / "references" / character, folder / "references" / character)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, worker: threading.Thread, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.is_alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the review page did not listen on port {port}")


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("STORYBOARD_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    with Image.open(path) as shot:
        assert shot.size[0] >= 1280 and shot.size[1] >= 720
    return path


def test_review_page_in_chromium_approves_edits_and_rejects(media, boxes, tmp_path):
    chromium = _chromium()
    from playwright.sync_api import expect, sync_playwright

    manifest = _review_set(media, boxes, tmp_path / "dataset")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 6
    port = _free_port()
    config = parse_config({"characters": [{"name": "bunny", "display_name": "Buck"}, {"name": "sintel"}],
                           "review": {"local_review_page": True, "local_review_port": port,
                                      "local_review_timeout_s": 120}})
    run_dir = tmp_path / "run"
    result: dict = {}

    def review() -> None:
        try:
            result["out"] = CALLBACK_HANDLERS["HumanReview"]({"ManifestUri": str(manifest), "ReviewMode": "a2i"},
                                                             run_dir, config)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = err

    worker = threading.Thread(target=review, daemon=True)
    worker.start()
    _wait_listening(port, worker)
    edited = "Buck the rabbit yawns and stretches under a tree, full shot"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"http://127.0.0.1:{port}/")

            def at_record(number: int, reviewed: int) -> None:
                expect(page.locator(".meta")).to_contain_text(f"record {number} of 6")
                expect(page.locator("#progress")).to_contain_text(f"{reviewed} of 6 reviewed")

            # 1: the crop, its character's three references and the shortcuts; approve with "a"
            at_record(1, 0)
            expect(page.locator("#character")).to_have_text("Buck")
            expect(page.locator("#caption")).to_have_value(rows[0]["alt_text"])
            expect(page.locator("#references img")).to_have_count(3)
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("#crop, #references img", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == 4 and min(widths) > 50, widths  # every image really loaded
            expect(page.locator(".keys")).to_contain_text("approve")
            page.keyboard.press("a")
            # 2: skip with "n" (it stays pending and comes back at the end)
            at_record(2, 1)
            page.keyboard.press("n")
            # 3: "e" focuses the caption; type a new one; Enter saves the edit
            at_record(3, 1)
            page.keyboard.press("e")
            expect(page.locator("#caption")).to_be_focused()
            page.keyboard.press("ControlOrMeta+a")
            page.keyboard.type(edited)
            expect(page.locator("#count")).to_contain_text("edited")
            page.keyboard.press("Enter")
            # 4 (Sintel): a reason, Esc leaves the field, "r" rejects
            at_record(4, 2)
            expect(page.locator("#character")).to_have_text("Sintel")
            expect(page.locator("#references img")).to_have_count(3)
            _screenshot(page, tmp_path, "review_page.png")
            page.locator("#reason").click()
            page.keyboard.type("her head is cut off")
            page.keyboard.press("Escape")
            page.keyboard.press("r")
            # 5: a click on Approve; 6: "a"
            at_record(5, 3)
            page.locator("#approve").click()
            at_record(6, 4)
            page.keyboard.press("a")
            # back to the skipped record 2; "a" finishes the review
            at_record(2, 5)
            page.keyboard.press("a")
            expect(page.locator("#done")).to_contain_text("All 6 records are reviewed")
            for decision, count in (("approved", "4"), ("edited", "1"), ("rejected", "1")):
                expect(page.locator(f"#count-{decision}")).to_have_text(count)
            _screenshot(page, tmp_path, "review_done.png")
        finally:
            browser.close()

    worker.join(30)
    assert not worker.is_alive(), "the review page did not stop after the last answer"
    assert "error" not in result, result.get("error")
    assert result["out"] == {"ReviewedManifestUri": str(run_dir / "train.jsonl"), "ApprovedCount": "4",
                             "EditedCount": "1", "RejectedCount": "1"}
    train = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    by_crop = {Path(r["image-ref"]).stem: r["caption"] for r in train}
    assert list(by_crop) == [rows[i]["crop_id"] for i in (0, 1, 2, 4, 5)]  # the rejected record 4 is absent
    assert by_crop[rows[2]["crop_id"]] == edited
    assert by_crop[rows[0]["crop_id"]] == rows[0]["alt_text"] and by_crop[rows[1]["crop_id"]] == rows[1]["alt_text"]
    assert all(set(r) == {"image-ref", "caption"} for r in train)
    reviewed = [json.loads(line) for line in (run_dir / "reviewed_manifest.jsonl").read_text().splitlines()]
    assert [r["review"]["decision"] for r in reviewed] == ["approved", "approved", "edited", "rejected", "approved",
                                                          "approved"]
    assert reviewed[2]["alt_text"] == edited and reviewed[2]["review"]["original_caption"] == rows[2]["alt_text"]
    assert reviewed[3]["review"]["reasons"] == ["rejected by the reviewer: her head is cut off"]
    assert {r["review"]["reviewer"] for r in reviewed} == {"a2i:local-reviewer"}
