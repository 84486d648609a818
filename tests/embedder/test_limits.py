"""The models' lock: granted in arrival order."""

from __future__ import annotations

import threading
import time

from embedder_service.limits import ModelLock

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
