"""A fill job's states (withcache.downloads owns the lifecycle); a module of its own so the
catalog's re-keying and the web layer can name them without importing the download manager."""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """A job's state; the values are what the jobs table, the API and the UI show."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"
    # The origin's answer may not be stored (withcache.freshness.NotCacheable).
    UNCACHEABLE = "uncacheable"


# The names the rest of the code uses.
QUEUED = JobState.QUEUED
RUNNING = JobState.RUNNING
COMPLETED = JobState.COMPLETED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED
REFUSED = JobState.REFUSED
UNCACHEABLE = JobState.UNCACHEABLE
ACTIVE = (QUEUED, RUNNING)
FINISHED = (COMPLETED, FAILED, CANCELLED, REFUSED, UNCACHEABLE)
