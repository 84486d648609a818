"""Similarity-transform alignment."""

from __future__ import annotations

import numpy as np
import pytest

from embedder_service.models.aligner import FaceAligner, similarity_transform

TEMPLATE = np.array([[47.74, 45.37], [101.23, 44.99], [74.34, 79.79], [50.40, 101.76], [97.68, 101.50]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    ("angle", "scale", "shift"), [(0.0, 1.0, (0, 0)), (0.4, 2.5, (30, -12)), (-2.0, 0.3, (5, 7))]
)
def test_recovers_an_exact_similarity(angle: float, scale: float, shift: tuple[float, float]) -> None:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = (TEMPLATE - 70) @ (scale * rotation).T + shift
    matrix = similarity_transform(source, TEMPLATE)
    np.testing.assert_allclose(apply(matrix, source), TEMPLATE, atol=1e-9)


def test_never_reflects() -> None:
    mirrored = TEMPLATE * [-1, 1]
    matrix = similarity_transform(mirrored, TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0


def dots(points: np.ndarray, shape: tuple[int, int] = (400, 300)) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    for x, y in points.round().astype(int):
        image[y - 1 : y + 2, x - 1 : x + 2] = 255
    return image


def brightness_at(chip: np.ndarray, points: np.ndarray) -> list[int]:
    return [int(chip[y - 2 : y + 3, x - 2 : x + 3].max()) for x, y in points.round().astype(int)]


def test_chip_puts_the_landmarks_on_the_template() -> None:
    landmarks = TEMPLATE * 1.7 + [40, 90]
    chip = FaceAligner(TEMPLATE, 150).align(dots(landmarks), landmarks)
    assert chip.shape == (150, 150, 3)
    assert min(brightness_at(chip, TEMPLATE)) > 100


def test_eyes_nose_mode_ignores_the_mouth() -> None:
    landmarks = TEMPLATE * 1.7 + [40, 90]
    image = dots(landmarks[:3])
    landmarks[3:] += 40  # mouth corners badly placed: they must not pull the eyes off the template
    eyes_nose = FaceAligner(TEMPLATE, 150, mode="eyes_nose").align(image, landmarks)
    five_point = FaceAligner(TEMPLATE, 150, mode="five_point").align(image, landmarks)
    assert min(brightness_at(eyes_nose, TEMPLATE[:3])) > 100
    assert min(brightness_at(five_point, TEMPLATE[:3])) < 100
