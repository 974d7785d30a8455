"""pipeline.yaml validation: unknown keys, wrong types and impossible values are named with their range."""

from __future__ import annotations

import pytest
from storyboard_testutil import REPO

from core.config import ConfigError, load_config, parse_config


def test_project_and_demo_configurations_load():
    config = load_config(REPO / "pipeline.yaml")
    assert config.sampling.mode == "interval" and config.captions.max_chars == 1024
    demo = load_config(REPO / "examples" / "bbb_sample" / "pipeline.yaml")
    assert [c.name for c in demo.characters] == ["bunny"]
    assert demo.character("bunny").caption_name == "Bunny"


@pytest.mark.parametrize("data, fragments", [
    ({"sampling": {"evry_s": 2}}, ["sampling.evry_s", "unknown key"]),
    ({"captions": {"max_chars": 2000}}, ["captions.max_chars", "1024"]),
    ({"sampling": {"every_s": "often"}}, ["sampling.every_s", "'often'"]),
    ({"crops": {"aspect_ratio": 5}}, ["crops.aspect_ratio", "4.0"]),
    ({"crops": {"min_side_px": 256}}, ["crops.min_side_px", "512"]),
    ({"embeddings": {"titan_output_length": 512}}, ["embeddings.titan_output_length"]),
    ({"characters": [{"name": "Bad Name"}]}, ["characters.0.name"]),
    ({"characters": [{"name": "a"}, {"name": "a"}]}, ["repeated", "'a'"]),
    ({"detection": {"temporal_window": 4}}, ["detection.temporal_window", "odd"]),
])
def test_bad_settings_name_the_key_and_the_allowed_range(data, fragments):
    with pytest.raises(ConfigError) as err:
        parse_config(data, source="pipeline.yaml")
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message


def test_missing_or_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_relative_reference_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "refs").mkdir()
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("characters:\n  - name: hero\n    references: [refs/a.png, {timestamp_s: 1.0, bbox: [0, 0, 64, 64], "
                   "video: clip.mp4}]\n")
    config = load_config(cfg)
    image, frame = config.characters[0].references
    assert image == str((tmp_path / "refs" / "a.png").resolve())
    assert frame.video == str((tmp_path / "clip.mp4").resolve())
