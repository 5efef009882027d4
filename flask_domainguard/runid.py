"""Run ids and lease owners: who holds a sweep's domains or a worker's jobs, and whether it
still runs.

Below both :mod:`.jobs` and :mod:`.sweep`, which lease rows to owners named here.
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["new_run_id", "owner_alive"]


def new_run_id() -> str:
    """A fresh run id or lease owner: host, process and a random part (64 characters at most)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(6)}"[:64]


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process a run id or lease owner (:func:`new_run_id`) names still runs:
    ``False`` only when it ran on this host and no such process exists now, ``None`` when
    this host cannot tell (another host, or not our format)."""
    host, _, rest = (owner or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:32] or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to another user
        return True
    return True
