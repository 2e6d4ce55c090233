"""Profiles of the server under load: ``bench.run --profile`` runs gunicorn
under py-spy (``pip install py-spy``; not a dependency) and keeps, next to the
results, the raw stacks of the master and its workers (``profile-<run>.txt``,
collapsed: one stack and its sample count per line, what flamegraph tools
read) and a summary of where the time went (``profile-<run>.top.txt``): the
functions by own time and by time under them. The recording spans the whole
server run, so profile one scenario per run.

``python -m bench.profile FILE...`` prints that summary for raw files.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    """py-spy recording gunicorn and its workers from their start to their
    stop (attaching to a running process fails in some sandboxes; starting
    it as py-spy's child works everywhere)."""

    def __init__(self, out_dir: Path, tag: str) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(binary).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.binary = binary
        self.path = out_dir / f"profile-{tag}.txt"

    def wrapper(self) -> list[str]:
        return [self.binary, "record", "--subprocesses", "--format", "raw", "--nolineno", "--rate", "250",
                "--nonblocking", "--output", str(self.path), "--"]

    def summarize(self) -> Path | None:
        if not self.path.exists():
            return None
        summary = self.path.with_suffix(".top.txt")
        summary.write_text(summarize([self.path]))
        return summary


def frame_name(frame: str) -> str:
    """``func (path/to/module.py)`` -> ``module.py:func``, short enough to read;
    py-spy's ``process 123:"<command line>"`` -> ``process 123`` (no paths)."""
    if frame.startswith("process ") and ":" in frame:
        return frame.split(":", 1)[0]
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    return f"{where.rsplit('/', 1)[-1]}:{name}" if where else name


def summarize(paths: list[Path], top: int = 40) -> str:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame_name(f) for f in stack.split(";") if f]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for name in set(frames):
                under[name] += count
    lines = [f"# {total} samples from {len(paths)} process(es): {', '.join(p.name for p in paths)}", "",
             f"## own time (top {top})"]
    lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in own.most_common(top)] if total else []
    lines += ["", f"## time under the function (top {top})"]
    lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in under.most_common(top)] if total else []
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize([Path(p) for p in sys.argv[1:]]))
