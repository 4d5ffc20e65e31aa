"""The suite's guard for Hypothesis: background threads never move the global `random`."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def test_a_background_thread_leaves_the_global_generator_alone() -> None:
    before = random.getstate()
    drawn: list[float] = []

    def busy() -> None:
        for _ in range(1000):
            drawn.append(random.random() + random.uniform(0, 1) + random.randint(0, 9))
            random.shuffle([1, 2, 3])
            random.randbytes(4)

    worker = threading.Thread(target=busy)
    worker.start()
    worker.join()
    assert len(drawn) == 1000
    assert random.getstate() == before  # the thread drew from its own generator


def test_the_main_thread_still_draws_from_the_global_generator() -> None:
    random.seed(7)
    first = [random.random() for _ in range(3)]
    random.seed(7)
    assert [random.random() for _ in range(3)] == first


def test_a_property_test_is_undisturbed_by_a_thread_drawing_throughout() -> None:
    # Without the guard, a thread drawing while Hypothesis generates examples fails the property
    # with "Do not use the `random` module inside strategies" (run this file with --noconftest).
    stop = threading.Event()

    def noisy() -> None:
        while not stop.is_set():
            random.random()

    @given(st.lists(st.integers(), max_size=50))
    def reversing_keeps_the_elements(values: list[int]) -> None:
        assert sorted(values) == sorted(reversed(values))

    worker = threading.Thread(target=noisy)
    worker.start()
    try:
        reversing_keeps_the_elements()
    finally:
        stop.set()
        worker.join()
