"""Record facenet-pytorch's MTCNN outputs on real photos, as the parity reference for our ONNX MTCNN.

Writes tests/embedder/data/mtcnn_reference.json: per image (path relative to the shared
data folder, size) every face's box, probability and 5 landmarks, coordinates rounded to
1e-3 px and probabilities to 1e-6.

facenet-pytorch pins torch<2.3 and numpy<2 and its detector imports torchvision, none of
which belong in the project's environment, so this runs in a separate venv with the
CPU torch wheel that lies on this machine's disk (a plain ``pip install torch`` would pull
gigabytes of CUDA libraries):

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install torch==2.13.0 pillow numpy
    .venv-ref/bin/pip install --no-deps facenet-pytorch==2.6.0
    OPENBLAS_NUM_THREADS=1 .venv-ref/bin/python tools/record_mtcnn_reference.py [--data ../shared/data]

PyPI's torchvision wheels do not load beside that torch build, and facenet-pytorch only
needs ``torchvision.ops.boxes.batched_nms`` from it for detection (plus an import of
``transforms.functional`` it never calls there). So torchvision is replaced by a stub
whose ``batched_nms`` follows torchvision's CPU algorithm: boxes sorted by score with a
stable sort, IoU with areas (x2 - x1) * (y2 - y1), suppression when IoU > threshold in
float64, and above 4,000 coordinates the per-image loop that re-sorts the kept boxes. The
package's ``__init__`` (which imports requests and the training helpers) is skipped too:
only ``facenet_pytorch.models.mtcnn`` is loaded, from the installed files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
OUTPUT = REPO_ROOT / "tests" / "embedder" / "data" / "mtcnn_reference.json"
SETTINGS: dict[str, Any] = {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709}

# A mix of crowds, pairs, aligned and un-aligned LFW, large photos, grey and RGBA files, and no face.
IMAGES = [
    "multi_face/deepface_selfie-many-people.jpg",
    "multi_face/compreface_016_8.jpg",
    "multi_face/compreface_015_6.jpg",
    "multi_face/dlib_bald_guys.jpg",
    "multi_face/mtcnn_office4.jpg",
    "multi_face/face_api_js_bbt1.jpg",
    "multi_face/azure_test-image-person-group.jpg",
    "multi_face/facenet_pytorch_multiface.jpg",
    "multi_face/dlib_2008_002470.jpg",
    "multi_face/face_recognition_obama_and_biden.jpg",
    "multi_face/deepface_couple.jpg",
    "lfw_dev/AJ_Cook/AJ_Cook_0001.jpg",
    "lfw_dev/Bridget_Fonda/Bridget_Fonda_0003.jpg",
    "lfw_dev/Dustin_Brown/Dustin_Brown_0001.jpg",
    "lfw_dev/Helen_Clark/Helen_Clark_0004.jpg",
    "lfw_dev/Johnny_Carson/Johnny_Carson_0001.jpg",
    "lfw_dev/Mark_Hurlbert/Mark_Hurlbert_0004.jpg",
    "lfw_dev/Paula_Radcliffe/Paula_Radcliffe_0001.jpg",
    "lfw_dev/Shawn_Marion/Shawn_Marion_0001.jpg",
    "lfw_original_150px/AJ_Lamas/AJ_Lamas_0001.jpg",
    "lfw_original_150px/Charlie_Zaa/Charlie_Zaa_0002.jpg",
    "lfw_original_150px/George_Lucas/George_Lucas_0001.jpg",
    "lfw_original_150px/Jim_Parque/Jim_Parque_0001.jpg",
    "other_sets/facenet_pytorch/shea_whigham/1.jpg",
    "other_sets/face_recognition/barack_obama/obama3.jpg",
    "other_sets/deepface/deepface_person_01/img1.jpg",
    "other_sets/face_api_js_bbt/bbt_amy/amy1.png",
    "other_sets/face_recognition/lin_manuel_miranda/lin-manuel-miranda.png",
    "other_sets/dlib_johns/John_Salley/000179_02159509.jpg",
    "other_sets/azure_face/azure_Family1-Dad/Family1-Dad1.jpg",
    "single_face_unlabeled/azure_detection1.jpg",
    "no_face/dlib_dogs.jpg",
    "no_face/facenet_pilatus800.jpg",
]


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # Vectorised by blocks of rows, so that timing facenet-pytorch through this stub
    # (tools/bench) is not slowed by Python: the float32 values compared are the ones
    # torchvision's C++ loop computes pair by pair.
    order = scores.sort(stable=True, descending=True)[1]
    x1, y1, x2, y2 = boxes[order].unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    count = len(order)
    removed = np.zeros(count, bool)
    keep = []
    for start in range(0, count, 512):
        rows = slice(start, min(start + 512, count))
        w = torch.minimum(x2[rows, None], x2[None, start:]) - torch.maximum(x1[rows, None], x1[None, start:])
        h = torch.minimum(y2[rows, None], y2[None, start:]) - torch.maximum(y1[rows, None], y1[None, start:])
        inter = w.clamp(min=0) * h.clamp(min=0)
        overlap = inter / (areas[rows, None] + areas[None, start:] - inter)
        suppress = (overlap.double() > iou_threshold).numpy()
        for i in range(start, rows.stop):
            if not removed[i]:
                keep.append(i)
                removed[i + 1 :] |= suppress[i - start, i + 1 - start :]
    return order[torch.tensor(keep, dtype=torch.int64)]


def _batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    if boxes.numel() > 4000:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            members = torch.where(idxs == class_id)[0]
            keep_mask[members[_nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _load_mtcnn_class() -> Any:
    modules = {
        name: types.ModuleType(name)
        for name in (
            "torchvision",
            "torchvision.transforms",
            "torchvision.transforms.functional",
            "torchvision.ops",
            "torchvision.ops.boxes",
        )
    }
    modules["torchvision"].transforms = modules["torchvision.transforms"]  # type: ignore[attr-defined]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    modules["torchvision"].ops = modules["torchvision.ops"]  # type: ignore[attr-defined]
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]  # type: ignore[attr-defined]
    modules["torchvision.ops.boxes"].batched_nms = _batched_nms  # type: ignore[attr-defined]
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.submodule_search_locations is None:
        sys.exit("facenet-pytorch is not installed in this environment (see the docstring)")
    package = types.ModuleType("facenet_pytorch")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.update(modules)
    sys.modules["facenet_pytorch"] = package
    from facenet_pytorch.models.mtcnn import MTCNN

    return MTCNN


def reference_mtcnn() -> Any:
    """facenet-pytorch's MTCNN on the CPU, with the settings our detector reproduces."""
    return _load_mtcnn_class()(
        keep_all=True,
        device=torch.device("cpu"),
        post_process=False,
        min_face_size=SETTINGS["min_face_size"],
        thresholds=SETTINGS["thresholds"],
        factor=SETTINGS["factor"],
    )


def load_rgb(path: Path) -> Image.Image:
    """The loading the parity test must repeat: EXIF orientation applied, then RGB (alpha dropped)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    torch.set_num_threads(2)
    mtcnn = reference_mtcnn()
    records: list[dict[str, Any]] = []
    for rel in IMAGES:
        image = load_rgb(args.data / rel)
        start = time.perf_counter()
        boxes, probs, points = mtcnn.detect(image, landmarks=True)
        elapsed = time.perf_counter() - start
        faces = []
        if boxes is not None:
            for box, prob, marks in zip(boxes, probs, points, strict=True):
                faces.append(
                    {
                        "box": np.round(np.asarray(box, np.float64), 3).tolist(),
                        "score": round(float(prob), 6),
                        "landmarks": np.round(np.asarray(marks, np.float64), 3).tolist(),
                    }
                )
        records.append({"path": rel, "width": image.width, "height": image.height, "faces": faces})
        print(f"{rel}: {image.width}x{image.height}, {len(faces)} faces, {elapsed * 1000:.0f} ms")

    header = {
        "generator": "tools/record_mtcnn_reference.py",
        "facenet_pytorch": importlib.metadata.version("facenet-pytorch"),
        "torch": torch.__version__,
        "settings": SETTINGS,
    }
    # One line per image: small, and a re-recording diffs image by image.
    images = ",\n".join(json.dumps(record) for record in records)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(f'{json.dumps(header)[:-1]}, "images": [\n{images}\n]}}\n')
    print(f"{sum(len(r['faces']) for r in records)} faces in {len(records)} images -> {args.output}")


if __name__ == "__main__":
    main()
