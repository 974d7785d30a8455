"""RekognitionDetector with a stubbed DetectLabels, plus the box helpers and the image payload encoder."""

from __future__ import annotations

from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest
from botocore.stub import ANY, Stubber

from core.embeddings import ColorTextureDescriptor
from core.errors import InputError
from core.images import encode_image
from steps.boxes import clip_box, iou, nms, ratio_box_to_pixels
from steps.detection import CharacterDetector
from steps.records import Detection, SampledFrame

LABELS = ["Person", "Animal", "Mammal", "Cartoon", "Toy", "Face", "Rabbit", "Bird"]




@pytest.fixture
def rekognition(aws_env):
    client = boto3.client("rekognition", region_name="us-east-1")
    sent: list[dict] = []
    client.meta.events.register("before-parameter-build.rekognition.DetectLabels",
                                lambda params, **_: sent.append(params))
    with Stubber(client) as stubber:
        yield client, stubber, sent
        stubber.assert_no_pending_responses()


def detection_config(**overrides):
    from core.config import DetectionConfig

    return DetectionConfig(backend="rekognition", **overrides)


def expected_request(min_confidence: float = 50.0, labels=tuple(LABELS)) -> dict:
    return {"Image": {"Bytes": ANY}, "MinConfidence": min_confidence, "Features": ["GENERAL_LABELS"],
            "Settings": {"GeneralLabels": {"LabelInclusionFilters": list(labels)}}}


def instance(box_px, region, confidence=90.0) -> dict:
    """A DetectLabels instance whose BoundingBox holds ``box_px`` (x, y, w, h relative to ``region``) as ratios."""
    x, y, w, h = box_px
    rw, rh = region
    return {"BoundingBox": {"Left": x / rw, "Top": y / rh, "Width": w / rw, "Height": h / rh},
            "Confidence": confidence}


def label(name, instances=(), confidence=95.0) -> dict:
    return {"Name": name, "Confidence": confidence, "Instances": list(instances), "Parents": [], "Aliases": [],
            "Categories": [{"Name": "Animals and Pets"}]}


def _decode_jpeg(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# -- synthetic characters: run everywhere ---------------------------------------------------------------

def draw_redbot(canvas, x, y, size):
    """A red disc with a yellow square belly on ``canvas`` at (x, y), ``size`` px wide."""
    r = size // 2
    cv2.circle(canvas, (x + r, y + r), r, (220, 30, 30), -1)
    cv2.rectangle(canvas, (x + r // 2, y + r // 2), (x + r + r // 2, y + r + r // 2), (250, 220, 20), -1)


def draw_greenbot(canvas, x, y, size):
    """A green triangle with a dark blue stripe."""
    pts = np.array([[x + size // 2, y], [x, y + size], [x + size, y + size]], np.int32)
    cv2.fillPoly(canvas, [pts], (30, 170, 60))
    cv2.rectangle(canvas, (x + size // 3, y + 2 * size // 3), (x + 2 * size // 3, y + 3 * size // 4), (20, 20, 120), -1)


def synthetic_references():
    refs = {"redbot": [], "greenbot": []}
    for size, bg in ((90, (200, 200, 200)), (60, (180, 190, 210))):
        for name, draw in (("redbot", draw_redbot), ("greenbot", draw_greenbot)):
            img = np.full((size + 20, size + 20, 3), bg, np.uint8)
            draw(img, 10, 10, size)
            refs[name].append(img)
    return refs


def synthetic_frame():
    """A 360x240 frame with bars: 16 px left/right, 30 px top/bottom; content box (16, 30, 328, 180)."""
    image = np.zeros((240, 360, 3), np.uint8)
    content = np.full((180, 328, 3), (190, 195, 200), np.uint8)
    draw_redbot(content, 30, 40, 80)      # content-relative box (30, 40, 80, 80)
    draw_greenbot(content, 200, 60, 70)   # content-relative box (200, 60, 70, 70)
    image[30:210, 16:344] = content
    return SampledFrame(video="synthetic.mp4", frame_index=7, timestamp_s=0.28, image=image,
                        content_box=(16, 30, 328, 180))


def test_synthetic_frame_boxes_map_to_source_pixels_and_characters(rekognition):
    from steps.rekognition import RekognitionDetector

    client, stubber, sent = rekognition
    region = (328, 180)
    response = {"Labels": [
        label("Cartoon"),  # scene label without instances: no candidates
        label("Toy", [instance((30, 40, 80, 80), region, 91.0), instance((200, 60, 70, 70), region, 88.0)]),
        label("Animal", [instance((31, 41, 79, 79), region, 70.0)]),  # the same red object again: merged
        label("Plant", [instance((120, 10, 60, 60), region)]),  # not a configured label: ignored
    ], "LabelModelVersion": "3.0"}
    stubber.add_response("detect_labels", response, expected_request())
    detector = RekognitionDetector(synthetic_references(), ColorTextureDescriptor(), detection_config(),
                                   client=client)
    assert isinstance(detector, CharacterDetector) and detector.name == "rekognition"
    detections = detector.detect(synthetic_frame())

    by_character = {d.character: d for d in detections}
    assert set(by_character) == {"redbot", "greenbot"}
    assert by_character["redbot"].bbox == (16 + 30, 30 + 40, 80, 80)
    assert by_character["greenbot"].bbox == (16 + 200, 30 + 60, 70, 70)
    assert all(0.6 <= d.score <= 1.0 for d in detections)
    assert detections == sorted(detections, key=lambda d: -d.score)
    assert detector.stats.candidates == 2 and detector.stats.instances == 3

    # The request carried the content region only (bars removed), as a JPEG.
    sent_image = _decode_jpeg(sent[0]["Image"]["Bytes"])
    assert sent_image.shape == (180, 328, 3)
    assert sent_image[:, :5].mean() > 150  # no black bar on the left edge


def test_identity_threshold_nms_and_max_per_frame(rekognition):
    from steps.rekognition import RekognitionDetector

    client, stubber, _ = rekognition
    region = (328, 180)
    # Two overlapping boxes on redbot (IoU about 0.5: kept apart by the 0.9 merge, suppressed by NMS 0.3)
    # and one box on empty background, which resembles neither character.
    response = {"Labels": [label("Person", [instance((30, 40, 80, 80), region), instance((50, 40, 80, 80), region),
                                            instance((120, 100, 60, 60), region)])]}
    stubber.add_response("detect_labels", response, expected_request(min_confidence=70.0))
    detector = RekognitionDetector(synthetic_references(), ColorTextureDescriptor(),
                                   detection_config(rekognition_min_confidence=70.0, identity_threshold=0.75),
                                   client=client)
    detections = detector.detect(synthetic_frame())
    assert [d.character for d in detections] == ["redbot"]
    assert detections[0].bbox in {(46, 70, 80, 80), (66, 70, 80, 80)}
    assert detections[0].score >= 0.75


def test_empty_answer_and_tiny_frame_is_upscaled_to_rekognition_minimum(rekognition):
    from steps.rekognition import RekognitionDetector

    client, stubber, sent = rekognition
    stubber.add_response("detect_labels", {"Labels": []}, expected_request())
    detector = RekognitionDetector(synthetic_references(), ColorTextureDescriptor(), detection_config(),
                                   client=client)
    tiny = SampledFrame("tiny.mp4", 0, 0.0, np.full((50, 64, 3), 90, np.uint8), (2, 5, 60, 40))
    assert detector.detect(tiny) == []
    h, w = _decode_jpeg(sent[0]["Image"]["Bytes"]).shape[:2]
    assert min(h, w) >= 80 and w / h == pytest.approx(60 / 40, rel=0.03)


def test_bad_inputs_fail_before_calling_rekognition(rekognition):
    from steps.rekognition import RekognitionDetector

    client, _, sent = rekognition
    embedder = ColorTextureDescriptor()
    with pytest.raises(InputError, match="no reference images"):
        RekognitionDetector({"redbot": []}, embedder, detection_config(), client=client)
    with pytest.raises(InputError, match="reference 0 of character 'redbot'"):
        RekognitionDetector({"redbot": [np.zeros((10, 10), np.uint8)]}, embedder, detection_config(), client=client)
    detector = RekognitionDetector(synthetic_references(), embedder, detection_config(), client=client)
    outside = SampledFrame("v.mp4", 1, 0.04, np.zeros((100, 100, 3), np.uint8), (50, 50, 80, 80))
    with pytest.raises(InputError, match="not inside"):
        detector.detect(outside)
    assert sent == []


def test_default_client_uses_the_project_retry_policy(aws_env):
    from core.config import AwsConfig
    from steps.rekognition import RekognitionDetector

    detector = RekognitionDetector(synthetic_references(), ColorTextureDescriptor(), detection_config(),
                                   aws=AwsConfig(region="eu-west-1"))
    assert detector.client.meta.region_name == "eu-west-1"
    assert detector.client.meta.config.retries["mode"] == "adaptive"


# -- real footage: Big Buck Bunny ---------------------------------------------------------------------

def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _decode_frame(path: Path, index: int) -> np.ndarray:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has fewer than {index + 1} frames")


def test_bunny_box_in_real_frame_maps_to_bunny_and_source_pixels(media, rekognition):
    from steps.rekognition import RekognitionDetector

    client, stubber, sent = rekognition
    # Second 5 of bbb_30s (frame 125 at 25 fps): the bunny stands at x 135..300, y 30..310 of 640x360.
    picture = _decode_frame(media / "clips" / "bbb_30s.mp4", 125)
    assert picture.shape == (360, 640, 3)
    # Put it in a letterboxed 640x480 frame, as a 4:3 master would carry it: content box (0, 60, 640, 360).
    image = np.zeros((480, 640, 3), np.uint8)
    image[60:420] = picture
    frame = SampledFrame("bbb_30s.mp4", 125, 5.0, image, (0, 60, 640, 360))
    references = {name: [_read_rgb(p) for p in sorted((media / "references" / name).glob("*.png"))]
                  for name in ("bunny", "sintel")}
    assert all(references.values())

    region = (640, 360)
    response = {"Labels": [
        label("Animal", [instance((135, 30, 165, 280), region, 93.2),
                         instance((410, 155, 190, 75), region, 55.1)]),  # the flat rock: a false candidate
        label("Rabbit", [instance((137, 28, 162, 283), region, 81.0)], confidence=81.0),
        label("Mammal", [], confidence=93.2),
    ], "LabelModelVersion": "3.0"}
    stubber.add_response("detect_labels", response, expected_request())
    detector = RekognitionDetector(references, ColorTextureDescriptor(), detection_config(identity_threshold=0.8),
                                   client=client)
    detections = detector.detect(frame)

    assert len(detections) == 1
    bunny = detections[0]
    assert bunny.character == "bunny"
    assert bunny.bbox == (135, 90, 165, 280)  # source pixels: the content box offset (0, 60) added back
    assert 0.8 <= bunny.score <= 1.0
    sent_image = _decode_jpeg(sent[0]["Image"]["Bytes"])
    assert sent_image.shape == (360, 640, 3)
    assert np.abs(sent_image.astype(int) - picture.astype(int)).mean() < 6.0


# -- box helpers and payload encoding -----------------------------------------------------------------

def test_iou_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0


def test_nms_is_per_character_and_limited():
    dets = [Detection("a", (0, 0, 10, 10), 0.9), Detection("a", (2, 0, 10, 10), 0.95),
            Detection("a", (50, 50, 10, 10), 0.7), Detection("b", (0, 0, 10, 10), 0.8),
            Detection("a", (80, 80, 10, 10), 0.6)]
    kept = nms(dets, iou_threshold=0.3)
    assert kept == [dets[1], dets[3], dets[2], dets[4]]
    assert nms(dets, iou_threshold=0.3, max_keep=1) == [dets[1], dets[3]]
    assert len(nms(dets, iou_threshold=1.0)) == 5
    with pytest.raises(ValueError):
        nms(dets, iou_threshold=1.5)


def test_ratio_boxes_are_offset_and_clipped():
    assert ratio_box_to_pixels(0.25, 0.5, 0.5, 0.25, (100, 50, 200, 100)) == (150, 100, 100, 25)
    assert ratio_box_to_pixels(-0.1, 0.9, 0.3, 0.3, (0, 0, 100, 100)) == (0, 90, 20, 10)
    assert ratio_box_to_pixels(1.2, 0.0, 0.1, 0.1, (0, 0, 100, 100)) is None
    assert clip_box((5, 5, 10, 10), (0, 0, 8, 8)) == (5, 5, 3, 3)


def test_encode_image_fits_byte_and_side_limits():
    noise = np.random.default_rng(3).integers(0, 256, size=(900, 1200, 3), dtype=np.uint8)
    big = encode_image(noise, max_bytes=10_000_000, max_side=600)
    assert (big.width, big.height) == (600, 450)
    small = encode_image(noise, max_bytes=60_000)
    assert len(small.data) <= 60_000 and small.width < 1200
    assert small.width / small.height == pytest.approx(4 / 3, rel=0.02)
    png = encode_image(noise[:100, :100], max_bytes=10_000_000, image_format="png")
    assert png.data[:4] == b"\x89PNG" and png.scale == 1.0
    with pytest.raises(InputError, match="does not fit"):
        encode_image(noise, max_bytes=500, min_side=400)
    with pytest.raises(InputError, match="uint8"):
        encode_image(noise.astype(np.float32), max_bytes=10_000)
