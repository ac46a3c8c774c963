"""Fixed-size batches of an iterable (``itertools.batched`` from Python 3.12, for 3.11)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(iterable: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    """Tuples of ``size`` items in order; the last one may be shorter."""
    iterator = iter(iterable)
    while batch := tuple(islice(iterator, size)):
        yield batch
