"""The score cohort kept filled: a de-duplicated random sample of stored faces, drawn once the store
holds enough distinct faces, topped up when deletes thin it, and drawn afresh each time the store
has doubled since (docs/decisions/search.md).

A sample of fixed size, not every stored face: a face's statistics against it have the same
distribution whatever the store's size, so one calibrated threshold holds for every store. Drawn
afresh as the store grows, so that it stays a sample of the whole store, not of its first faces.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import structlog
from prometheus_client import Gauge

from search_service.domain import CohortStatus
from search_service.services.asnorm import CohortProtocol, CohortScorer, draw_cohort
from search_service.storage.cohort import CohortRepository

log = structlog.get_logger(__name__)

COHORT_FACES = Gauge("facesearch_score_cohort_faces", "Stored faces in the score cohort")
# After a top-up that found too few distinct faces, the next waits until this fraction of the faces
# outside the cohort then have been stored since (each try reads every one of them), or a member left.
_RETRY_AFTER_NEW = 0.1
# A full cohort is drawn afresh once the store holds this many times the faces it held at the last draw.
_REDRAW_GROWTH = 2


class FillStopped(Exception):
    """The service is stopping: a draw in progress gives up between two batches of candidates."""


class ScoreCohort:
    def __init__(
        self, repository: CohortRepository, protocol: CohortProtocol | None = None, enabled: bool = True
    ) -> None:
        self._repository = repository
        self.protocol = protocol or CohortProtocol()
        self._enabled = enabled
        self._filling = threading.Lock()
        self._stopping = threading.Event()
        self._loaded: tuple[int, CohortScorer] | None = None
        self._loading = threading.Lock()
        # (members, faces outside, newest face id) after the last top-up that left the cohort short.
        self._short_after: tuple[int, int, int] | None = None

    def scorer(self) -> CohortScorer | None:
        """The cohort to normalise scores with, or None while it is too small (or turned off)."""
        if not self._enabled:
            return None
        version = self._repository.version()
        loaded = self._loaded
        if loaded is None or loaded[0] != version:
            with self._loading:
                loaded = self._loaded
                if loaded is None or loaded[0] != version:
                    members = self._repository.members()
                    loaded = (members.version, CohortScorer(members.vectors, self.protocol))
                    self._loaded = loaded
        scorer = loaded[1]
        return scorer if len(scorer) >= self.protocol.minimum else None

    def status(self) -> CohortStatus:
        return self._status(self._repository.counts()[0])

    def _status(self, members: int) -> CohortStatus:
        COHORT_FACES.set(members)
        return CohortStatus(members, self.protocol.size, self.protocol.minimum, self._enabled)

    def fill(self) -> CohortStatus:
        """Top the cohort up to its size with distinct stored faces outside it, or draw it afresh
        when the store has doubled since the last draw; nothing to do otherwise, or when the store
        has not grown enough since a top-up found too few. Blocking: run it in a worker thread.

        Raises FillStopped when ``stop`` is called meanwhile (nothing is changed then)."""
        if not self._enabled:
            return self.status()
        with self._filling:
            members, others = self._repository.counts()
            stored = members + others
            if members >= self.protocol.size:
                if others == 0 or stored < _REDRAW_GROWTH * self._repository.drawn_at():
                    return self._status(members)
                return self._redraw(members, stored)
            if others == 0 or self._waiting(members):
                return self._status(members)
            current = self._repository.members()
            joining = self._draw(current.vectors, afresh=False)
            self._repository.add(joining)
            members, others = self._repository.counts()
            short = (members, others, self._repository.newest_face_id())
            self._short_after = None if members >= self.protocol.size else short
            status = self._status(members)
            log.info("score cohort topped up", joined=len(joining), members=members, active=status.active)
            return status

    def _redraw(self, members: int, stored: int) -> CohortStatus:
        """A new draw over the whole store; kept only if it is no smaller than the cohort it replaces."""
        drawn = self._draw(np.zeros((0, 0), np.float32), afresh=True)
        kept_old = len(drawn) < members
        if kept_old:  # fewer distinct faces than the cohort holds: keep it until the store doubles again
            self._repository.add([])  # (records the store's size)
        else:
            self._repository.replace(drawn)
            members = len(drawn)
        log.info("score cohort drawn afresh", members=members, stored_faces=stored, kept_old=kept_old)
        return self._status(members)

    def _draw(self, members: np.ndarray, *, afresh: bool) -> list[int]:
        candidates = self._unless_stopped(self._repository.candidates(afresh=afresh))
        return draw_cohort(members, candidates, self.protocol)

    def _unless_stopped(
        self, batches: Iterator[tuple[np.ndarray, np.ndarray]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in batches:
            if self._stopping.is_set():
                raise FillStopped
            yield batch

    def stop(self) -> None:
        """Make a draw in progress give up, and wait until it has (blocking: a worker thread)."""
        self._stopping.set()
        with self._filling:
            pass

    def _waiting(self, members: int) -> bool:
        """Whether the last top-up came up short and too little changed since: counted by new face
        ids, not by the faces outside, which deletes as many as new faces would leave unchanged."""
        if self._short_after is None:
            return False
        members_then, others_then, newest_then = self._short_after
        new_faces = self._repository.newest_face_id() - newest_then
        return members >= members_then and new_faces < max(1, others_then * _RETRY_AFTER_NEW)

    async def keep_filled(self, interval_s: float) -> None:
        """Fill the cohort every ``interval_s`` for as long as the task runs (cancel it to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.fill)
            except FillStopped:
                return
            except Exception:  # a full disk, a locked database: the next round tries again
                log.exception("could not top up the score cohort")
            await asyncio.sleep(interval_s)
