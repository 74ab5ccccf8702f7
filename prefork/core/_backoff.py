"""When a broker may start its next worker after one died: the crash-loop backoff for code
that cannot boot, and the rate cap for workers killed after they were ready.

Pure: each function updates the broker's record and returns the wait (0.0: start at once),
or the line the supervisor logs.
"""

from __future__ import annotations

from collections.abc import Callable

from prefork.core._roster import BrokerRecord


def crashed(
    b: BrokerRecord,
    ready_at: float | None,
    signal: int | None,
    now: float,
    jitter: Callable[[], float],
) -> str:
    """A worker of ``b`` left unasked (it was ready at ``ready_at``, or never; killed by
    ``signal``, or it exited): when the next may start. Returns the line to log ("": none).

    One that served ``backoff_reset`` seconds ends a crash loop. One killed after it served
    (the OOM killer, an operator, a hang) is replaced at once within a rate cap: the code
    boots, and backoff is for code that cannot boot. Any other counts as an early failure.
    """
    stable = ready_at is not None and now - ready_at >= b.policy.backoff_reset
    if stable:
        b.failures, b.not_before = 0, 0.0
    if ready_at is not None and signal is not None:
        if delay := killed_after_ready(b, now):
            return f"[{b.policy.name}] workers are being killed fast; next start in {delay:.2f}s"
        return ""
    return "" if stable else failed_early(b, now, jitter())


def failed_early(b: BrokerRecord, now: float, jitter: float) -> str:
    """A worker of ``b`` failed before it was ready (or soon after): the line to log."""
    delay = early_failure(b, now, jitter)
    if delay:
        msg = f"{b.failures} failed starts in a row: backing off, next start in {delay:.2f}s"
    else:
        msg = "a worker failed early: starting its replacement now"
    return f"[{b.policy.name}] {msg}"


def early_failure(b: BrokerRecord, now: float, jitter: float) -> float:
    """A worker failed before it was ready (or soon after): count it and return the wait.

    The first failure is retried at once (a lone crash should cost no time); from the second
    in a row the wait doubles from ``backoff_base`` up to ``backoff_cap``, times ``jitter``
    (0.5 to 1, so brokers drift apart). A failure ``backoff_reset`` seconds after the last
    wait ended starts the count afresh: an old loop is not this one.
    """
    p = b.policy
    if now - b.not_before >= p.backoff_reset:
        b.failures = 0
    b.failures += 1
    delay = 0.0
    if b.failures > 1:
        delay = min(p.backoff_cap, p.backoff_base * 2 ** (b.failures - 2)) * jitter
    b.not_before = now + delay
    return delay


def killed_after_ready(b: BrokerRecord, now: float) -> float:
    """A worker that was ready was killed from outside (the OOM killer, an operator, a hang).

    The code boots, so the replacement starts at once, within a token bucket: a burst of twice
    the desired count, then one wait of at most 1/desired seconds at a time (a wait already
    running is not lengthened; its end starts every missing worker). So a kill storm cannot
    leave the broker without workers, nor make the master fork in a loop.
    """
    if now < b.not_before:
        return 0.0
    rate = max(1, b.desired)
    # Debt is capped at one token, so a wait never grows past 1/rate, whatever the storm.
    b.tokens = max(-1.0, min(2.0 * rate, b.tokens + (now - b.tokens_at) * rate) - 1)
    b.tokens_at = now
    if b.tokens >= 0:
        return 0.0
    delay = -b.tokens / rate
    b.not_before = now + delay
    return delay
