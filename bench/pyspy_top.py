"""Summarise a `py-spy record --format raw` profile: the top functions by self
and by inclusive samples.

    python bench/pyspy_top.py PROFILE.txt [--limit 20]

Each line of the raw format is a collapsed stack, root first, frames joined
by ';', then a space and the sample count. Self = samples where the function
is the leaf; inclusive = samples where it is anywhere on the stack (counted
once per stack). Shares are of all samples taken while the server was busy
(py-spy leaves out idle samples unless --idle is given).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def load(path: Path) -> tuple[Counter, Counter, int]:
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f]
        # The first frame may be the thread name ("process ..." / "thread ...").
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, total


def summarize(path: Path, limit: int = 20, indent: str = "") -> None:
    own, inclusive, total = load(path)
    if not total:
        print(f"{indent}(no samples)")
        return
    print(f"{indent}{total} busy samples; top by self time:")
    for frame, n in own.most_common(limit):
        print(f"{indent}  {100 * n / total:5.1f}%  {frame}")
    print(f"{indent}top by inclusive time:")
    for frame, n in inclusive.most_common(limit + 8):
        print(f"{indent}  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--limit", type=int, default=20)
    options = parser.parse_args()
    summarize(options.profile, options.limit)
