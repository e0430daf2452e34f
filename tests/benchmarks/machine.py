"""What a benchmark says about the machine it ran on (every figure in docs/benchmarks.md
names it, since these machines are shared and noisy), and how it writes its section there."""

from __future__ import annotations

import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def write_section(section: str, body: str) -> None:
    """Replace (or append) `section` of docs/benchmarks.md with `body`."""
    text = DOC.read_text()
    if section not in text:
        DOC.write_text(text.rstrip("\n") + "\n\n" + section + "\n\n" + body.strip("\n") + "\n")
        return
    start = text.index(section) + len(section)
    end = text.find("\n## ", start)
    end = len(text) if end == -1 else end
    DOC.write_text(text[:start] + "\n\n" + body.strip("\n") + "\n" + text[end:])


__all__ = ["DOC", "cpu_model", "write_section"]
