"""Fixtures for the exchange tests."""

from collections.abc import Callable, Iterator

import pytest

from exchange.matching import BatchOutcome, _batch_hooks, batch_hook_register


@pytest.fixture
def hooks() -> Iterator[Callable[[Callable[[BatchOutcome], list]], None]]:
    """Register batch hooks for one test."""
    added: list = []

    def add(hook: Callable[[BatchOutcome], list]) -> None:
        batch_hook_register(hook)
        added.append(hook)

    yield add
    for hook in added:
        _batch_hooks.remove(hook)
