"""Make the configured index hold exactly the store's faces, for any backend.

    python -m search_service.reindex [--rebuild] [--quiet]

For existing installations: after switching ``INDEX_BACKEND`` (to OpenSearch or Milvus), after
restoring a data directory, or to start an index afresh. It opens the store (``DATA_DIR``) and the
configured backend (``INDEX_BACKEND`` and its settings) and reconciles them, as the service does
when it starts: faces the index lacks are added, faces the store no longer has are removed, and
an index built from another store or with another layout is rebuilt. ``--rebuild`` drops the
index first and builds it anew. No embedder is needed: every face's vector is in the store.

Run it while the search service is stopped: opening the store sweeps files no row names yet, and
the embedded index and Milvus Lite have one owner at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from facesearch_common.logging import configure_logging
from search_service.domain import FaceBatch
from search_service.errors import IndexUnavailableError
from search_service.index.base import FaceSource
from search_service.index.registry import create_index
from search_service.settings import SearchSettings
from search_service.storage import Storage
from search_service.storage.database import FILE_NAME


@dataclass
class _Progress:
    """The store as the index reads it, counting on a progress bar the faces it has taken in."""

    source: FaceSource
    bar: Any  # tqdm

    @property
    def store_id(self) -> str:
        return self.source.store_id

    def face_batches(self, batch_size: int = 10_000) -> Iterator[FaceBatch]:
        for batch in self.source.face_batches(batch_size):
            yield batch
            self.bar.update(len(batch))  # the index asked for the next batch: this one is in


@dataclass(frozen=True)
class Summary:
    backend: str
    rebuilt: bool
    stored: int
    indexed: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.stored == self.indexed

    def line(self) -> str:
        mode = "rebuilt" if self.rebuilt else "reconciled"
        verdict = "" if self.ok else f"; MISMATCH: the store holds {self.stored:,}"
        return (
            f"{self.backend} index {mode}: {self.indexed:,} faces indexed of {self.stored:,} stored "
            f"in {self.seconds:.1f} s{verdict}"
        )


def reindex(settings: SearchSettings, *, rebuild: bool = False, progress: bool = True) -> Summary:
    """Open the store and the configured backend, drop the index if asked, and reconcile."""
    if not (settings.data_dir / FILE_NAME).is_file():
        # An empty store would empty the index: never on a mistyped DATA_DIR.
        raise FileNotFoundError(f"no store at {settings.data_dir} (DATA_DIR): nothing to index from")
    started = time.monotonic()
    storage = Storage.open(settings.data_dir, sweep=False)
    try:
        stored = sum(stats.faces for stats in storage.faces.collections())
        index = create_index(settings)
        try:
            if rebuild:
                index.drop()
            with tqdm(total=stored, unit="face", desc="indexing", disable=not progress) as bar:
                index.open(_Progress(storage.faces, bar))
            # The embedded index builds its HNSW graph in the background: wait, so that close()
            # saves it and the service starts with it.
            index.wait_idle()
            indexed = index.count()
        finally:
            index.close()
    finally:
        storage.close()
    return Summary(settings.index_backend, rebuild, stored, indexed, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m search_service.reindex", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="drop the index and build it anew from the store"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    settings = SearchSettings()
    configure_logging(settings.log_level, json_output=False)
    try:
        summary = reindex(settings, rebuild=args.rebuild, progress=not args.quiet)
    except (FileNotFoundError, IndexUnavailableError) as error:
        print(f"reindex failed: {error}", file=sys.stderr)
        return 2
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
