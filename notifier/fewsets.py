"""Sets that are usually of one member, kept as a tuple until they grow.

Why: most users have one stream open, so most of a worker's channel
subscriber sets and held-lease sets have one member, and both live as long
as the stream. An empty ``set`` is 216 bytes, a tuple of one 48: ~0.3 KiB
per stream (bench/README.md). Past ``GROW_AT`` members (a broadcast channel,
a user with many tabs) it becomes a set again, so adding and removing stay
O(1) where there are thousands.
"""

from __future__ import annotations

from typing import TypeVar, Union

T = TypeVar("T")
FewSet = Union[tuple[T, ...], set[T]]  # noqa: UP007 - a generic alias, subscripted below

GROW_AT = 8


def joined(members: FewSet[T] | None, item: T) -> FewSet[T]:
    """``members`` with ``item`` (None: none yet); may be the same set, changed."""
    if members is None:
        return (item,)
    if isinstance(members, tuple):
        if item in members:
            return members
        if len(members) < GROW_AT:
            return (*members, item)
        members = set(members)
    members.add(item)
    return members


def without(members: FewSet[T], item: T) -> FewSet[T] | None:
    """``members`` without ``item``; None when that leaves none."""
    if isinstance(members, tuple):
        rest = tuple(member for member in members if member != item)
        return rest or None
    members.discard(item)
    return members or None


def snapshot(members: FewSet[T]) -> tuple[T, ...]:
    """The members now, safe to iterate while they change."""
    return members if isinstance(members, tuple) else tuple(members)
