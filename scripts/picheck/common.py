"""What every step of pi-check shares: its two errors, its log line and running a host command."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
EXIT_UNAVAILABLE = 77
GUEST = "/opt/pi-check"   # inside the root: the bundle, images/, photo.jpg, root.json


class Unavailable(Exception):
    """This machine cannot run the check at all."""


class CheckError(Exception):
    """The check ran and failed, or a step of it failed."""


def log(msg: str) -> None:
    print(f"pi-check: {msg}", flush=True)


def run(cmd: list[str], *, log_to: Path | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a host command; with log_to, its output goes to that file and its tail is shown on failure."""
    if log_to is None:
        res = subprocess.run(cmd, text=True, capture_output=True, **kw)
        output = (res.stdout or "") + (res.stderr or "")
    else:
        with log_to.open("a") as f:
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            res = subprocess.run(cmd, text=True, stdout=f, stderr=subprocess.STDOUT, **kw)
        output = log_to.read_text(errors="replace")
    if check and res.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise CheckError(f"command failed (exit {res.returncode}): {shlex.join(cmd)}\n{tail}")
    return res
