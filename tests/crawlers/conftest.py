"""Crawler fixtures: a small sample catalogue and its loopback site."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crawlers.catalogue import build_catalogue
from crawlers.http import HttpClient
from crawlers.sample_site import SampleSite

WEEK1 = (datetime(2026, 1, 5, 3, tzinfo=UTC), datetime(2026, 1, 12, 3, tzinfo=UTC))
WEEK2 = (datetime(2026, 1, 12, 3, tzinfo=UTC), datetime(2026, 1, 19, 3, tzinfo=UTC))


@pytest.fixture(scope="session")
def catalogue():
    return build_catalogue(n_songs=12, seed=3)


@pytest.fixture
def site(catalogue):
    with SampleSite(catalogue) as running:
        yield running


@pytest.fixture
def http():
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=200.0, backoff_base=0.01,
                        max_retries=3)
    yield client
    client.close()
