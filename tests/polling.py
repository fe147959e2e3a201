"""Waiting in tests without timing anything: poll a condition until a generous deadline."""

import time

#: Generous: it only stops a hung test; nothing is timed against it.
WAIT_SECONDS = 90
#: How often a condition is looked at again.
POLL_SECONDS = 0.05


def wait_for(predicate, what: str, seconds: float = WAIT_SECONDS):
    """Poll ``predicate`` until it returns something truthy, and return that; fail naming
    ``what`` once ``seconds`` have gone by."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out waiting for {what}")
