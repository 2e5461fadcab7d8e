"""What every results file records beside its figures: the commit it measured, the machine's load, and
paths relative to the repository (a results file names no absolute path)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The measured commit (with '+dirty' when the work tree has uncommitted changes to tracked files)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def relative(text: str) -> str:
    """`text` with this checkout's and its parent's absolute paths written relative to the repository."""
    return str(text).replace(str(ROOT) + os.sep, "").replace(str(ROOT.parent) + os.sep, "../")


def provenance() -> dict:
    return {"commit": commit(), "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())}
