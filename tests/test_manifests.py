"""The Nova Canvas training-manifest validator rejects each kind of violation, naming record and limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError, TooFewRecordsError
from steps.bedrock_validation import validate_training_rows
from steps.image_probes import ImageInfo, LocalImageProbe
from steps.manifests import image_ref, training_row, validate_training_manifest


def _image(path, w, h, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path, format=fmt)
    return path


def _manifest(tmp_path, rows):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _good_rows(tmp_path, n=5):
    return [{"image-ref": f"crops/ok_{i}.jpg", "caption": f"Hero number {i} in a meadow"}
            for i in range(n) if _image(tmp_path / "crops" / f"ok_{i}.jpg", 512, 640)]


def test_a_valid_manifest_passes(tmp_path):
    report = validate_training_manifest(_manifest(tmp_path, _good_rows(tmp_path)))
    assert report.ok and report.records == 5 and report.images_checked == 5
    assert report.to_json()["width_px"] == [512, 512]


@pytest.mark.parametrize("bad_row, expected", [
    ({"image-ref": "crops/small.jpg", "caption": "Hero small"}, "width and height must be 512 to 4096"),
    ({"image-ref": "crops/wide.jpg", "caption": "Hero wide"}, "aspect ratio"),
    ({"image-ref": "crops/anim.gif", "caption": "Hero gif"}, "extension must be .png, .jpg or .jpeg"),
    ({"image-ref": "crops/tiff.png", "caption": "Hero tiff"}, "format TIFF"),
    ({"image-ref": "crops/ok_0.jpg", "caption": "ab"}, "3 to 1024"),
    ({"image-ref": "crops/ok_0.jpg", "caption": "x" * 1025}, "3 to 1024"),
    ({"image-ref": "crops/bad name!.jpg", "caption": "Hero bad"}, "file names may hold only"),
    ({"image_ref": "crops/ok_0.jpg", "alt_text": "Hero labelled"}, "labelling manifest format"),
    ({"image-ref": "crops/missing.jpg", "caption": "Hero missing"}, "does not exist"),
    ({"image-ref": "s3://bucket", "caption": "Hero bucket"}, "not an s3://bucket/key URI"),
])
def test_each_violation_is_reported_with_its_line_and_limit(tmp_path, bad_row, expected):
    rows = _good_rows(tmp_path)
    _image(tmp_path / "crops" / "small.jpg", 400, 600)
    _image(tmp_path / "crops" / "wide.jpg", 2560, 600)
    _image(tmp_path / "crops" / "anim.gif", 600, 600, "GIF")
    _image(tmp_path / "crops" / "tiff.png", 600, 600, "TIFF")
    report = validate_training_manifest(_manifest(tmp_path, rows + [bad_row]))
    assert not report.ok
    assert any(e.startswith("line 6:") and expected in e for e in report.errors), report.errors


def test_pixel_count_and_byte_limits(tmp_path):
    class Probe:
        def probe(self, ref):
            return {"big.png": ImageInfo(4096, 4000, "PNG", 1000),
                    "heavy.png": ImageInfo(600, 600, "PNG", 60 << 20)}[ref]

    report = validate_training_rows([{"image-ref": "big.png", "caption": "Hero big"},
                                     {"image-ref": "heavy.png", "caption": "Hero heavy"}], Probe())
    text = "\n".join(report.errors)
    assert "at most 12582912" in text and "50 MB" in text
    assert "2 records; Nova Canvas fine-tuning takes 5 to 10000" in text


def test_raising_mode_distinguishes_too_few_records(tmp_path):
    rows = _good_rows(tmp_path, 3)
    with pytest.raises(TooFewRecordsError, match="at least 5"):
        validate_training_manifest(_manifest(tmp_path, rows), raise_on_error=True)
    rows = _good_rows(tmp_path, 5) + [{"image-ref": "crops/ok_0.jpg", "caption": "dup"}]
    with pytest.raises(InputError, match="repeats line 1"):
        validate_training_manifest(_manifest(tmp_path, rows), raise_on_error=True)


def test_manifest_forms():
    assert image_ref("crops/a.jpg", "s3://bucket/run/crops/") == "s3://bucket/run/crops/a.jpg"
    assert image_ref("crops/a.jpg", None) == "crops/a.jpg"
    assert training_row({"image_ref": "s3://b/k.jpg", "alt_text": "Hero", "crop_id": "x"}) == {
        "image-ref": "s3://b/k.jpg", "caption": "Hero"}
    assert LocalImageProbe().resolve("file:///tmp/a.jpg").as_posix() == "/tmp/a.jpg"
