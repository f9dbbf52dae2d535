"""How values are shown to people, the same on every page and in the admin (the job page's
script formats durations the same way)."""

from __future__ import annotations

from datetime import timedelta


def format_duration(duration: timedelta | None) -> str:
    """A short human duration ("4.2 s", "3 min 05 s", "2 h 03 min"); "—" for none."""
    if duration is None:
        return "—"
    seconds = max(duration.total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
