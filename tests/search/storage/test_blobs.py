"""Files under the data directory: what an interrupted upload leaves is swept when the store opens.

(Debris of an interrupted photo write: test_crash.py.)
"""

from __future__ import annotations

from pathlib import Path

from search_service.storage import Storage
from tests.search.fakes import new_image, photo
from tests.search.storage.records import staged_video, stored_files


def test_an_abandoned_upload_is_swept_at_the_next_open(data_dir: Path) -> None:
    storage = Storage.open(data_dir)
    staged = staged_video(storage, b"half an upload")  # a refused or interrupted upload, never added
    [kept], _ = storage.images.add([new_image(photo("ann"))])
    storage.close()
    assert staged.path.exists()

    reopened = Storage.open(data_dir)
    try:
        assert not staged.path.exists()
        assert [path.name for path in stored_files(data_dir)] == [kept.image.sha256]
        assert reopened.images.file(kept.image).read_bytes() == photo("ann")
    finally:
        reopened.close()
