"""The service's notion of now, for the event times it records (accounts, requests, reviews).

``create_app(settings, clock=...)`` takes any ``Clock``; the default is the wall clock. The
simulation gives it the simulated time of each user action, so what the service records is
dated inside the simulated week that ``weekly_retrain`` snapshots (never re-dated in SQL).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)
