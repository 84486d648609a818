"""The models' lock: granted in arrival order, given up at the waiter's deadline."""

from __future__ import annotations

import threading
import time

import pytest

from embedder_service.limits import Deadline, DeadlineExceeded, ModelLock

ARRIVAL_GAP_S = 0.05


def test_turns_are_granted_in_arrival_order() -> None:
    lock = ModelLock("test")
    order: list[int] = []

    def take(index: int) -> None:
        with lock.turn():
            order.append(index)

    threads = [threading.Thread(target=take, args=(index,)) for index in range(5)]
    with lock.turn():
        for thread in threads:
            thread.start()
            time.sleep(ARRIVAL_GAP_S)  # each waits before the next arrives
        order.append(-1)
    for thread in threads:
        thread.join()
    assert order == [-1, 0, 1, 2, 3, 4]


def test_a_released_lock_goes_to_the_waiter_not_back_to_its_holder() -> None:
    """A holder that takes turn after turn (a many-image request) lets a waiter in between."""
    lock = ModelLock("test")
    order: list[str] = []

    def wait_once() -> None:
        with lock.turn():
            order.append("waiter")

    waiter = threading.Thread(target=wait_once)
    with lock.turn():
        order.append("holder")
        waiter.start()
        time.sleep(ARRIVAL_GAP_S)
    with lock.turn():
        order.append("holder")
    waiter.join()
    assert order == ["holder", "waiter", "holder"]


def test_a_waiter_gives_up_at_its_deadline_and_the_lock_stays_usable() -> None:
    lock = ModelLock("test")
    with lock.turn():
        started = time.monotonic()
        expected = r"within its 0\.1 s deadline \(detecting\)"
        with pytest.raises(DeadlineExceeded, match=expected), lock.turn(Deadline.after(0.1), "detecting"):
            pass
        assert 0.09 < time.monotonic() - started < 2
    with lock.turn(Deadline.after(1.0)):
        pass


def test_an_expired_deadline_is_refused_even_when_the_lock_is_free() -> None:
    with pytest.raises(DeadlineExceeded), ModelLock("test").turn(Deadline.after(0.0)):
        pass
