"""Resident memory of this process from /proc (Linux), in MiB.

``VmHWM`` belongs to the process's own address space, unlike ``ru_maxrss``, which a process
started with fork/vfork + exec inherits from its (possibly much larger) parent.
"""

from __future__ import annotations


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) from /proc/self/status."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak() -> None:
    """Start ``VmHWM`` afresh (Linux >= 4.0); where that is refused the peak includes earlier work."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
