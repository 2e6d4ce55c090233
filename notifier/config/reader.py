"""Reading ``NOTIFIER_*`` variables while collecting every problem, instead
of raising on the first: an operator fixes them all in one go."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

PREFIX = "NOTIFIER_"


T = TypeVar("T")


class ConfigError(Exception):
    """Every configuration problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class Reader:
    """Reads variables and collects problems instead of raising on the first."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def text(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def number(self, name: str, default: T, kind: Callable[[str], T], low: float, high: float,
               fallback: str | None = None) -> T:
        """``PREFIX + name``, else the unprefixed ``fallback`` variable, else ``default``."""
        full_name, raw = PREFIX + name, self.text(name)
        if raw is None and fallback is not None:
            full_name, raw = fallback, (self.environ.get(fallback) or "").strip() or None
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            self.problem(f"{full_name} must be a {'whole ' if kind is int else ''}number, got {raw!r}")
            return default
        if not (low <= value <= high):  # type: ignore[operator]
            self.problem(f"{full_name} must be between {low:g} and {high:g}, got {raw}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problem(f"{PREFIX}{name} must be true or false, got {raw!r}")
        return default

    def file(self, name: str, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError as exc:
            self.problem(f"{PREFIX}{name}: cannot read {path}: {exc.strerror}")
            return None
