"""Run ids and lease owners (``host:pid:random``), and whether the process one names still runs.

Shared by the sweep's domain claims and the job table's leases, so both can tell a crashed
owner from a live one on the same host.
"""

from __future__ import annotations

import os
import secrets
import socket


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
