"""notifier/fewsets.py against a plain set: any sequence of joins and
removals leaves the same members, a tuple while they are few."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from notifier.fewsets import GROW_AT, FewSet, joined, snapshot, without

operations = st.lists(st.tuples(st.booleans(), st.integers(0, 2 * GROW_AT)), max_size=80)


@given(operations)
def test_joins_and_removals_keep_what_a_set_would(steps: list[tuple[bool, int]]) -> None:
    members: FewSet[int] | None = None
    model: set[int] = set()
    grown = False
    for add, item in steps:
        if add:
            members = joined(members, item)
            model.add(item)
        elif members is not None:
            members = without(members, item)
            model.discard(item)
        if members is None:
            assert not model
            grown = False
            continue
        assert set(snapshot(members)) == model and len(snapshot(members)) == len(model)
        grown = grown or len(model) > GROW_AT
        # A tuple until it grows past GROW_AT; a set from then on, until emptied.
        assert isinstance(members, set) is grown


def test_a_snapshot_of_a_set_does_not_change_as_the_set_does() -> None:
    members: FewSet[int] | None = None
    for item in range(GROW_AT + 1):
        members = joined(members, item)
    assert isinstance(members, set)
    taken = snapshot(members)
    assert without(members, 0) is members
    assert 0 in taken and 0 not in members
