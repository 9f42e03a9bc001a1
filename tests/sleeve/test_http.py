from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sleeve.http import retry_after_seconds


def test_retry_after_seconds_and_dates():
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 20 < retry_after_seconds(format_datetime(later, usegmt=True)) <= 30
