"""Class names: the shipped label maps and the names of a config's output columns."""
from __future__ import annotations

import logging

import pytest

from actionkit import labels, load_config

from conftest import REPO, SHARED_DATA, require_shared

CONFIGS = REPO / "configs"
K400_CONFIG = CONFIGS / "recognition" / "i3d" / "i3d_r50_32x2x1_100e_kinetics400_rgb.py"
STHV1_CONFIG = CONFIGS / "recognition" / "slowfast" / "slowfast_r50_16x8x1_22e_sthv1_rgb.py"
AVA_CONFIG = CONFIGS / "detection" / "ava" / "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py"
CUSTOM_CONFIG = CONFIGS / "detection" / "ava" / "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes.py"
SYNTHETIC_CONFIG = CONFIGS / "recognition" / "synthetic" / "i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb.py"


def test_shipped_maps():
    k400 = labels.load_label_map("kinetics400")
    assert len(k400) == 400 and k400[0] == "abseiling" and k400[-1] == "zumba"
    assert labels.load_label_map("k400") == k400
    ava = labels.load_label_map("ava_v2_80")
    assert len(ava) == 80 and ava[0] == "bend/bow (at the waist)" and ava[-1] == "watch (a person)"
    ids = labels.load_label_ids("ava")
    assert min(ids) == 1 and ids[80] == "watch (a person)" and ids[3] == "crouch/kneel"
    sth = labels.load_label_map("sthv1")
    assert len(sth) == 174 and sth[0] == "Holding something"


@pytest.mark.parametrize("name", ["kinetics400", "ava_v2_80", "sthv1"])
def test_shipped_maps_equal_the_published_files(name):
    path = require_shared(SHARED_DATA / "label_maps" / f"{name}.txt")
    assert labels.load_label_map(name) == [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def test_id_name_files(tmp_path):
    path = tmp_path / "map.txt"
    path.write_text("1: bend/bow (at the waist)\n3: crouch/kneel\n\n80: watch (a person)\n")
    assert labels.load_label_ids(path) == {1: "bend/bow (at the waist)", 3: "crouch/kneel", 80: "watch (a person)"}
    names = labels.load_label_map(path)
    assert len(names) == 81 and names[3] == "crouch/kneel" and names[2] == "class_2" and names[0] == "class_0"
    shared = SHARED_DATA / "label_maps" / "ava_v2.txt"
    if shared.is_file():  # MMAction2's 60-class map: ids agree with the 80-name map
        full = labels.load_label_ids("ava_v2_80")
        assert all(full[i] == n for i, n in labels.load_label_ids(shared).items())
    path.write_text("1: a\nb\n")
    with pytest.raises(ValueError, match=r"map.txt:2: expected 'id: name'"):
        labels.load_label_ids(path)
    path.write_text("1: a\n1: b\n")
    with pytest.raises(ValueError, match=r"map.txt:2: id 1 is listed twice"):
        labels.load_label_ids(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="map.txt: label map is empty"):
        labels.load_label_map(path)
    with pytest.raises(FileNotFoundError, match="nothere.txt: label map not found"):
        labels.load_label_map(tmp_path / "nothere.txt")


def test_abbreviate():
    assert labels.abbreviate("take (an object) from (a person)") == "take ... from ..."
    assert labels.abbreviate("bend/bow (at the waist)") == "bend/bow ..."
    assert labels.abbreviate("dance") == "dance"


def test_recognition_configs_get_their_dataset_names():
    assert labels.class_names_for_config(load_config(K400_CONFIG)) == labels.load_label_map("kinetics400")
    assert labels.class_names_for_config(load_config(STHV1_CONFIG)) == labels.load_label_map("sthv1")


def test_ava_columns_background_then_action_ids():
    names = labels.class_names_for_config(load_config(AVA_CONFIG))
    assert len(names) == 81 and names[0] == labels.BACKGROUND
    assert names[1:] == labels.load_label_map("ava_v2_80")


def test_custom_classes_map_columns_to_action_ids():
    cfg = load_config(CUSTOM_CONFIG)
    custom = cfg.data.test.custom_classes
    names = labels.class_names_for_config(cfg)
    ava = labels.load_label_ids("ava_v2_80")
    assert len(names) == len(custom) + 1 == cfg.model.roi_head.bbox_head.num_classes
    assert names[0] == labels.BACKGROUND
    assert names[1:] == [ava[a] for a in custom]
    assert names[1] == "crouch/kneel" and names[2] == "get up"  # action ids 3 and 6
    # a config whose custom_classes do not fit its head is named as an error
    cfg.data.test.custom_classes = custom[:-1]
    with pytest.raises(ValueError, match=r"custom_classes lists 15 actions .* 17 output columns"):
        labels.class_names_for_config(cfg)


def test_unknown_dataset_gets_generic_names_with_a_note(caplog):
    cfg = load_config(SYNTHETIC_CONFIG)
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        names = labels.class_names_for_config(cfg)
    assert names == ["class_0", "class_1", "class_2", "class_3"]
    assert "no shipped class names" in caplog.text and "i3d_r18_tiny" in caplog.text
    # a 400-class model of a Kinetics config that was cut to fewer classes: the note says why
    cfg = load_config(K400_CONFIG, {"model.cls_head.num_classes": 10})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="actionkit"):
        assert labels.class_names_for_config(cfg) == labels.generic_names(10)
    assert "has 400 names" in caplog.text


def test_label_map_override(tmp_path):
    cfg = load_config(SYNTHETIC_CONFIG)
    assert labels.class_names_for_config(cfg, ["right", "down", "left", "up"]) == ["right", "down", "left", "up"]
    path = tmp_path / "four.txt"
    path.write_text("right\ndown\nleft\nup\n")
    assert labels.class_names_for_config(cfg, path)[3] == "up"
    with pytest.raises(ValueError, match="has 400 names but the model of .*i3d_r18_tiny.* has 4 output columns"):
        labels.class_names_for_config(cfg, "kinetics400")
    # a detector with an 'id: name' map, e.g. MMAction2's tools/data/ava/label_map.txt
    ids = tmp_path / "ids.txt"
    ids.write_text("3: crouch/kneel\n6: get up\n")
    names = labels.class_names_for_config(load_config(CUSTOM_CONFIG), ids)
    assert names[:3] == [labels.BACKGROUND, "crouch/kneel", "get up"] and names[3] == "class_10"
