"""The in-process SQLite write lock is granted in the order it was asked for."""

import threading
import time

from provisioner.store.sqlite import FairLock

WAIT_SECONDS = 10


def queued(lock: FairLock, count: int) -> None:
    """Wait until ``count`` threads are queued on ``lock`` (they block in C, not on a clock)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(lock._waiters) < count:
        assert time.monotonic() < deadline, "threads never queued"
        time.sleep(0.001)


def test_waiters_get_the_lock_in_arrival_order_even_against_the_releaser():
    """The holder that releases and asks again queues behind those already waiting: a busy
    writer thread can no longer starve the others."""
    lock = FairLock()
    order: list[str] = []
    lock.acquire()

    def take(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for number, name in enumerate("abc", start=1):
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        queued(lock, number)
        threads.append(thread)
    lock.release()
    take("releaser")
    for thread in threads:
        thread.join(WAIT_SECONDS)

    assert order == ["a", "b", "c", "releaser"]
    assert not lock._locked and not lock._waiters


def test_uncontended_lock_is_taken_and_released():
    lock = FairLock()
    with lock:
        assert lock._locked
    assert not lock._locked
