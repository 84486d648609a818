"""The detection benchmark's pure parts on hand-made inputs with known answers: IoU matching,
precision and recall, dlib's XML, WIDER FACE's ground truth and folder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder_service.models.detector import Detection
from tools.eval.detection import (
    AnnotationError,
    DetectionSet,
    DetectorChoice,
    DetectorUnderTest,
    Photo,
    Tally,
    benchmark,
    compreface_count,
    covers_centre,
    iou_matrix,
    markdown,
    matched,
    parse_dlib_xml,
    parse_wider,
    score_photo,
    to_json,
    wider_sets,
)

LANDMARKS = np.zeros((5, 2))


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Detection:
    return Detection(box=np.array([x1, y1, x2, y2], float), score=score, landmarks=LANDMARKS)


def test_iou_of_known_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    overlaps = iou_matrix(boxes[:1], boxes)
    # Half of each 10x10 box overlaps the other: 50 / (100 + 100 - 50).
    assert overlaps[0] == pytest.approx([1.0, 1 / 3, 0.0])


def test_a_true_box_is_matched_once_and_the_most_confident_detection_takes_it() -> None:
    truth = np.array([[0, 0, 10, 10]], float)
    found = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], float)
    assert matched(truth, found, [0.8, 0.9]) == 1
    # Below IoU 0.5 nothing matches: 1/3 here.
    assert matched(truth, np.array([[5, 0, 15, 10]], float), [0.9]) == 0
    assert matched(truth, np.empty((0, 4)), []) == 0


def test_scores_of_each_kind_of_ground_truth() -> None:
    boxes = Photo(Path("a.jpg"), boxes=np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float))
    found = [face(0, 0, 10, 10), face(50, 50, 60, 60)]
    one = score_photo("boxes", boxes, found, 100, 100)
    assert (one.truth, one.found, one.true_positives, one.exact) == (2, 2, 1, 1)

    counted = score_photo("count", Photo(Path("b.jpg"), count=1), found, 100, 100)
    assert (counted.truth, counted.found, counted.true_positives, counted.exact) == (1, 2, 1, 0)

    nothing = score_photo("none", Photo(Path("c.jpg")), found, 100, 100)
    assert (nothing.true_positives, nothing.found) == (0, 2)

    # LFW: a box over the centre is the named face; a bystander elsewhere is neither found nor false.
    centre = score_photo("centre", Photo(Path("d.jpg")), [face(40, 40, 60, 60), face(0, 0, 9, 9)], 100, 100)
    assert (centre.true_positives, centre.found, centre.truth) == (1, 1, 1)
    missed = score_photo("centre", Photo(Path("e.jpg")), [face(0, 0, 9, 9)], 100, 100)
    assert (missed.true_positives, missed.found) == (0, 0)


def test_tally_sums_and_rates() -> None:
    total = Tally()
    total.add(Tally(photos=1, truth=4, found=5, true_positives=3))
    total.add(Tally(photos=1, truth=0, found=1, true_positives=0))
    assert total.precision == pytest.approx(3 / 6)
    assert total.recall == pytest.approx(3 / 4)
    assert total.false_per_photo == pytest.approx(3 / 2)
    assert Tally().precision is None and Tally().recall is None


def test_covers_centre() -> None:
    assert covers_centre(np.array([40, 40, 60, 60]), 100, 100)
    assert not covers_centre(np.array([51, 40, 60, 60]), 100, 100)


def test_compreface_counts_from_file_names() -> None:
    assert compreface_count("compreface_016_8.jpg") == 8
    assert compreface_count("compreface_017_0.jpg") == 0
    assert compreface_count("dlib_bald_guys.jpg") is None


def test_dlib_xml_boxes(tmp_path: Path) -> None:
    xml = tmp_path / "faces.xml"
    xml.write_text(
        "<?xml version='1.0' encoding='ISO-8859-1'?>\n<dataset><images>"
        "<image file='a.jpg'><box top='10' left='20' width='30' height='40'/>"
        "<box top='0' left='0' width='5' height='5' ignore='1'/></image>"
        "<image file='b.jpg'></image></images></dataset>"
    )
    boxes = parse_dlib_xml(xml)
    assert boxes["a.jpg"].tolist() == [[20, 10, 50, 50]]
    assert boxes["b.jpg"].shape == (0, 4)
    (tmp_path / "bad.xml").write_text("<dataset><image file='a.jpg'><box top='x'/></image></dataset>")
    with pytest.raises(AnnotationError):
        parse_dlib_xml(tmp_path / "bad.xml")


WIDER_GT = """0--Parade/0_Parade_1.jpg
2
10 20 30 40 0 0 0 0 0 0
100 100 5 5 2 0 0 1 0 0
1--Empty/1_Empty_2.jpg
0
0 0 0 0 0 0 0 0 0 0
"""


def test_wider_ground_truth_skips_invalid_boxes_and_reads_empty_photos() -> None:
    boxes = parse_wider(WIDER_GT.splitlines())
    assert boxes["0--Parade/0_Parade_1.jpg"].tolist() == [[10, 20, 40, 60]]
    assert boxes["1--Empty/1_Empty_2.jpg"].shape == (0, 4)
    with pytest.raises(AnnotationError):
        parse_wider(["a.jpg", "2", "1 2 3 4 0 0 0 0 0 0"])
    with pytest.raises(AnnotationError):
        parse_wider(["a.jpg", "many"])


def test_a_tiny_wider_layout_is_benchmarked(tmp_path: Path) -> None:
    split = tmp_path / "wider_face_split"
    split.mkdir()
    (split / "wider_face_val_bbx_gt.txt").write_text(WIDER_GT)
    for name, width in (("0--Parade/0_Parade_1.jpg", 200), ("1--Empty/1_Empty_2.jpg", 180)):
        path = tmp_path / "WIDER_val" / "images" / name
        path.parent.mkdir(parents=True)
        Image.new("RGB", (width, 150)).save(path)
    sets = wider_sets(tmp_path)
    assert [(s.name, s.kind, len(s.photos)) for s in sets] == [("WIDER val", "boxes", 2)]

    # A stand-in that finds the Parade face exactly, and a false face on the empty photo.
    def detect(image: np.ndarray) -> list[Detection]:
        width = image.shape[1]
        return [face(10, 20, 40, 60)] if width == 200 else [face(0, 0, 10, 10)] if width == 180 else []

    results = benchmark(
        [DetectorUnderTest("stand-in", detect), DetectorUnderTest("absent", None, "no model file")],
        sets,
        timing_rounds=1,
    )
    tally = results[0].sets["WIDER val"]
    assert (tally.truth, tally.found, tally.true_positives) == (1, 2, 1)
    assert results[0].false["WIDER val"] == ["1_Empty_2.jpg"]
    assert set(results[0].ms_at_size) == {"250x250", "1280x720", "1920x1080"}
    assert results[1].sets == {}
    table = markdown(results, sets)
    assert "P 0.500 R 1.000 (1/2 exact)" in table and "no model file" in table
    assert to_json(results)[0]["sets"]["WIDER val"]["precision"] == 0.5


def test_detector_choices_parse() -> None:
    assert DetectorChoice.parse("mtcnn@0.8") == DetectorChoice("mtcnn", 0.8)
    assert DetectorChoice.parse("yunet") == DetectorChoice("yunet", None)
    with pytest.raises(ValueError, match="NAME@THRESHOLD"):
        DetectorChoice.parse("mtcnn@high")


def test_each_detector_is_tallied_on_its_own(tmp_path: Path) -> None:
    """Detectors share each decoded photo; their tallies, misses and false faces stay their own."""
    path = tmp_path / "a.jpg"
    Image.new("RGB", (100, 100)).save(path)
    sets = [DetectionSet("one face", "boxes", (Photo(path, boxes=np.array([[10, 10, 50, 50]], float)),))]

    def exact(image: np.ndarray) -> list[Detection]:
        return [face(10, 10, 50, 50)]

    def elsewhere(image: np.ndarray) -> list[Detection]:
        return [face(60, 60, 90, 90)]

    first, absent, second = benchmark(
        [
            DetectorUnderTest("exact", exact),
            DetectorUnderTest("absent", None, "no model file"),
            DetectorUnderTest("elsewhere", elsewhere),
        ],
        sets,
        timing_rounds=1,
    )
    assert first.name == "exact" and first.sets["one face"].true_positives == 1
    assert first.misses == first.false == {}
    assert (absent.name, absent.sets) == ("absent", {})
    assert second.name == "elsewhere" and second.sets["one face"].true_positives == 0
    assert second.misses == second.false == {"one face": ["a.jpg"]}
