"""A guard for tests of readers and writers that must never open a FIFO: the call answers at once or fails."""

from __future__ import annotations

import threading
import time


def answered_within(call, seconds=1.0):
    """call() run in a daemon thread: its result (or its exception, raised here), asserting it came in under
    `seconds` (a call that opened a FIFO would block for good)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no answer in {seconds} s (blocked on a FIFO?)"
    assert time.monotonic() - start < seconds
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
