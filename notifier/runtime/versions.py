"""Release ranges: which versions of a dependency an internal touch was read
against and tested with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata

Release = tuple[int, ...]


def parse(version: str) -> Release:
    """``"27.0.1"`` -> ``(27, 0, 1)``; pre-release and local tails are ignored
    (``"8.1.0rc1"`` -> ``(8, 1, 0)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise ValueError(f"not a release number: {version!r}")
    return tuple(int(part) for part in match.group().split("."))


def _padded(release: Release, size: int) -> Release:
    return release + (0,) * (size - len(release))


@dataclass(frozen=True)
class Tested:
    """``distribution`` from ``lowest`` (included) to ``below`` (excluded)."""

    distribution: str
    lowest: str
    below: str

    @property
    def specifier(self) -> str:
        """As setup.cfg writes it: ``>=27.0.1,<27.1``."""
        return f">={self.lowest},<{self.below}"

    def covers(self, version: str) -> bool:
        release, low, high = parse(version), parse(self.lowest), parse(self.below)
        size = max(len(release), len(low), len(high))
        return _padded(low, size) <= _padded(release, size) < _padded(high, size)

    @cached_property
    def installed(self) -> str | None:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return None

    @cached_property
    def active(self) -> bool:
        """True when the installed release is in range: take the internal path."""
        return self.installed is not None and self.covers(self.installed)

    def describe(self) -> str:
        where = "in" if self.active else "outside"
        return f"{self.distribution} {self.installed} ({where} the tested range {self.specifier})"
