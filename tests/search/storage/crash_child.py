"""The child process of the crash tests: ingests one photo and SIGKILLs itself at a chosen point.

``python -m tests.search.storage.crash_child DATA_DIR POINT``: the store is opened with a fault
hook that kills the process, with no chance to clean up, when the write reaches ``POINT`` (one of
``search_service.storage.faults.FaultPoint``). Exiting normally means the point was never reached.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import cast, get_args

from search_service.storage import Storage
from search_service.storage.faults import FaultHook, FaultPoint
from tests.search.fakes import new_image, photo

# The photo the child ingests: the crash tests look for it after reopening the store.
PHOTO = photo("eve", variant=1)


def kill_at(chosen: FaultPoint) -> FaultHook:
    def hook(point: FaultPoint) -> None:
        if point == chosen:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(data_dir: str, point: str) -> None:
    if point not in get_args(FaultPoint):
        raise SystemExit(f"unknown fault point {point!r}")
    storage = Storage.open(Path(data_dir), faults=kill_at(cast(FaultPoint, point)))
    storage.images.add([new_image(PHOTO, people=("eve",))])
    storage.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
