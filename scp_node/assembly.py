"""Study assembly: when is a study complete? Pure functions of timestamps."""

from __future__ import annotations

import datetime as dt


def is_complete(last_received_at: dt.datetime, now: dt.datetime, stable_seconds: float) -> bool:
    """A study is complete once no instance has arrived for ``stable_seconds``."""
    return (now - last_received_at).total_seconds() >= stable_seconds


def complete_cutoff(now: dt.datetime, stable_seconds: float) -> dt.datetime:
    """Studies whose last instance arrived at or before this instant are complete."""
    return now - dt.timedelta(seconds=stable_seconds)


def is_stalled(state_changed_at: dt.datetime, now: dt.datetime, timeout_seconds: float) -> bool:
    """Work that has not advanced for ``timeout_seconds`` is handed out again."""
    return (now - state_changed_at).total_seconds() >= timeout_seconds
