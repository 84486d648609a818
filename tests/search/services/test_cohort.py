"""The score cohort kept filled over a real store: drawn from distinct faces up to its size, used
from its minimum, reloaded when its members change, a short draw retried only once the store has
grown, and the background loop that fills it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search_service.services.asnorm import CohortProtocol
from search_service.services.cohort import FillStopped, ScoreCohort
from search_service.storage import Storage
from tests.search.fakes import new_image, photo

PROTOCOL = CohortProtocol(size=20, minimum=15, top_k=5)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = Storage.open(tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def cohort(storage: Storage) -> ScoreCohort:
    return ScoreCohort(storage.cohort, PROTOCOL)


def add_people(storage: Storage, names: list[str], photos_each: int = 1) -> None:
    """Photos of these people, all of them in each: the fake gives two photos of one person cosines
    of about 0.96 (near duplicates), and different people about 0."""
    people = tuple(names)
    storage.images.add([new_image(photo(*people, variant=v), people=people) for v in range(photos_each)])


def names(count: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def members_are_distinct(storage: Storage) -> bool:
    vectors = storage.cohort.members().vectors
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -1.0)
    return bool(similarities.max() < PROTOCOL.distinct_below)


def media_of(storage: Storage, face_id: int) -> int:
    return storage.faces.describe([face_id])[face_id].media_id


def test_fill_reaches_the_size_with_distinct_faces(storage: Storage, cohort: ScoreCohort) -> None:
    add_people(storage, names(30))
    status = cohort.fill()
    assert (status.members, status.size, status.minimum, status.active) == (20, 20, 15, True)
    assert storage.cohort.counts() == (20, 10)
    assert members_are_distinct(storage)
    scorer = cohort.scorer()
    assert scorer is not None and len(scorer) == 20
    assert cohort.fill().members == 20  # full: nobody more joins


def test_near_duplicates_stay_out(storage: Storage, cohort: ScoreCohort) -> None:
    """Twelve people in three photos each: one face per person joins, short of the minimum."""
    add_people(storage, names(12), photos_each=3)
    status = cohort.fill()
    assert (status.members, status.active) == (12, False)
    assert members_are_distinct(storage)
    assert cohort.scorer() is None  # below the minimum: searches rank by cosine


def test_the_scorer_is_used_from_the_minimum(storage: Storage, cohort: ScoreCohort) -> None:
    add_people(storage, names(14))
    assert cohort.fill().members == 14
    assert cohort.scorer() is None
    add_people(storage, names(2, prefix="q"))
    # 2 more distinct faces outside: 2 >= 1.1 * 0, so the short draw is tried again.
    status = cohort.fill()
    assert (status.members, status.active) == (16, True)
    scorer = cohort.scorer()
    assert scorer is not None and len(scorer) == 16
    assert cohort.scorer() is scorer  # the same cohort, not read again for every search


def test_a_disabled_cohort_is_neither_filled_nor_used(storage: Storage, cohort: ScoreCohort) -> None:
    add_people(storage, names(30))
    disabled = ScoreCohort(storage.cohort, PROTOCOL, enabled=False)
    status = disabled.fill()
    assert (status.members, status.enabled, status.active) == (0, False, False)
    assert storage.cohort.counts() == (0, 30)
    # Filled by an enabled one (a restart with normalisation on, then off again), still unused.
    assert cohort.fill().active
    assert disabled.scorer() is None
    assert disabled.status().members == 20 and not disabled.status().active


def test_the_scorer_follows_a_member_deleted_from_the_store(storage: Storage, cohort: ScoreCohort) -> None:
    """One person per photo, so that deleting a member's photo deletes that member alone."""
    for name in names(16):
        add_people(storage, [name])
    assert cohort.fill().members == 16
    before = cohort.scorer()
    assert before is not None and len(before) == 16
    members = storage.cohort.members()
    [first, second, *_] = members.face_ids.tolist()
    assert storage.images.delete(media_of(storage, first))
    after = cohort.scorer()
    assert after is not None and len(after) == 15
    assert not (after.cohort == members.vectors[0]).all(axis=1).any()  # the deleted face's vector
    assert storage.images.delete(media_of(storage, second))
    assert cohort.scorer() is None  # 14: below the minimum
    assert not cohort.status().active


def test_a_short_draw_waits_for_the_store_to_grow_by_a_tenth(storage: Storage, cohort: ScoreCohort) -> None:
    add_people(storage, names(10), photos_each=3)
    assert cohort.fill().members == 10  # 20 near duplicates stay outside
    add_people(storage, ["new1"])
    # 21 faces outside, fewer than 22: not worth reading them all again.
    assert cohort.fill().members == 10
    add_people(storage, ["new2"])
    assert cohort.fill().members == 12  # 22: tried again, and both newcomers join


def test_a_short_cohort_thinned_by_a_delete_is_topped_up_at_once(
    storage: Storage, cohort: ScoreCohort
) -> None:
    """Each person in three photos of their own: a member's photo deleted, another of theirs joins."""
    for name in names(10):
        add_people(storage, [name], photos_each=3)
    assert cohort.fill().members == 10
    [member, *_] = storage.cohort.members().face_ids.tolist()
    assert storage.images.delete(media_of(storage, member))
    assert storage.cohort.counts() == (9, 20)
    assert cohort.fill().members == 10  # no growth needed: the cohort lost a member
    assert members_are_distinct(storage)


def test_keep_filled_fills_the_cohort_until_cancelled(storage: Storage, cohort: ScoreCohort) -> None:
    interval = 0.05

    async def scenario() -> None:
        filler = asyncio.create_task(cohort.keep_filled(interval))

        async def until(members: int) -> None:
            deadline = time.perf_counter() + 100 * interval
            while cohort.status().members != members:
                assert time.perf_counter() < deadline, f"the cohort never reached {members} members"
                await asyncio.sleep(interval / 5)

        add_people(storage, names(8))
        await until(8)  # short: waiting for growth
        add_people(storage, names(30, prefix="q"))
        await until(20)
        filler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await filler
        assert filler.cancelled()
        # Stopped: a member deleted now is not replaced.
        [member, *_] = storage.cohort.members().face_ids.tolist()
        assert storage.images.delete(media_of(storage, member))
        await asyncio.sleep(5 * interval)
        assert cohort.status().members < 20

    asyncio.run(scenario())


def test_a_full_cohort_is_drawn_afresh_once_the_store_has_doubled(
    storage: Storage, cohort: ScoreCohort
) -> None:
    """A sample of the whole store, not of its first faces: the faces stored later get their chance."""
    add_people(storage, names(30, prefix="old"))
    assert cohort.fill().members == 20  # drawn from the 30 stored faces
    last_old = storage.cohort.newest_face_id()
    version = storage.cohort.version()
    add_people(storage, names(29, prefix="new"))  # 59 faces: not yet twice 30
    assert cohort.fill().members == 20 and storage.cohort.version() == version
    add_people(storage, names(1, prefix="last"))  # 60: twice the store of the last draw
    assert cohort.fill().members == 20
    assert storage.cohort.version() != version and members_are_distinct(storage)
    assert storage.cohort.drawn_at() == 60
    # Drawn from all 60: none of the 30 later faces among the 20 has odds of C(30,20)/C(60,20), 7e-9.
    assert max(storage.cohort.members().face_ids.tolist()) > last_old


def test_stop_makes_a_draw_in_progress_give_up_and_waits_for_it(storage: Storage) -> None:
    add_people(storage, names(30))
    stopping = ScoreCohort(storage.cohort, PROTOCOL)
    stopping.stop()  # before the draw reads its first batch: it gives up at once
    with pytest.raises(FillStopped):
        stopping.fill()
    assert storage.cohort.counts() == (0, 30)
