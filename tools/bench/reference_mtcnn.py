"""Times facenet-pytorch's MTCNN on image files; runs in the reference venv, which has torch.

    .venv-ref/bin/python -m tools.bench.reference_mtcnn [--repeats N] [--warm-up N] [--threads N...] IMAGE...

:mod:`tools.bench.embedder` runs it as a child process (facenet-pytorch cannot live in the
project's venv: it pins torch<2.3). It loads the detector exactly as the parity reference
recorder does, with the same settings, so the two MTCNNs do the same work. Prints one JSON
object: versions and, per torch thread count and image, the wall seconds of each timed call.

Every thread count asked for is timed because none is best everywhere: on 2 busy cores, two
torch threads made small images 20x slower than one (OpenMP workers waiting on each other),
while large frames can gain from the second core. The caller keeps the reference's best.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import torch

from tools.record_mtcnn_reference import load_rgb, reference_mtcnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warm-up", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = parser.parse_args()

    mtcnn = reference_mtcnn()
    images = {str(path): load_rgb(path) for path in args.images}
    seconds: dict[int, dict[str, list[float]]] = {}
    for threads in dict.fromkeys(args.threads):
        torch.set_num_threads(threads)
        for image in list(images.values())[: args.warm_up]:
            mtcnn.detect(image, landmarks=True)
        seconds[threads] = {path: [] for path in images}
        for _ in range(args.repeats):
            for path, image in images.items():
                started = time.perf_counter()
                mtcnn.detect(image, landmarks=True)
                seconds[threads][path].append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "facenet_pytorch": importlib.metadata.version("facenet-pytorch"),
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
