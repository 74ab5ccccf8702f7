"""A load worker's tally: what it counts, the deltas it reports, and the master's sum of them."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from prefork.load._histogram import Histogram
from prefork.load._tally import BIN_EVERY, ERROR_KINDS, MAX_MESSAGE, MAX_MESSAGES, Tally

NO_ERRORS = dict.fromkeys(ERROR_KINDS, 0)


def test_a_response_counts_a_request_its_bytes_status_and_latency() -> None:
    t = Tally()
    t.record(200, 1500, 120)
    t.record(200, 2500, 80)
    t.record(301, 10, 0)
    assert (t.requests, t.bytes, t.statuses, t.failed) == (3, 200, {200: 2, 301: 1}, 0)
    assert t.errors == NO_ERRORS
    assert (t.latency.count, t.latency.total, t.latency.max) == (3, 4010, 2500)


def test_a_status_of_400_or_more_is_also_an_error() -> None:
    t = Tally()
    for status in (200, 304, 399, 400, 404, 500, 503):
        t.record(status, 100, 10)
    assert t.requests == 7
    assert t.errors == {**NO_ERRORS, "status": 4}
    assert t.failed == 4


def test_a_failed_request_counts_its_kind_and_no_latency() -> None:
    t = Tally()
    t.error("connect")
    t.error("timeout")
    t.error("read")
    t.error("write")
    t.error("timeout")
    assert t.errors == {"connect": 1, "read": 1, "write": 1, "timeout": 2, "status": 0}
    assert (t.requests, t.failed, t.statuses, t.succeeded) == (0, 5, {}, 0)
    assert t.latency.count == 0  # no response: no latency (0 answers print no p50)


def test_requests_unanswered_at_the_end_are_latencies_and_counted_apart() -> None:
    t = Tally()
    t.record(200, 1000, 10)
    t.unanswered(900_000)
    t.unanswered(500_000, sent=False)
    assert (t.requests, t.unanswered_count, t.dropped) == (1, 2, 1)
    assert (t.latency.count, t.latency.max) == (3, 900_000)
    t.connected(250)
    assert t.connect.count == 1 and t.connect.max == 250


def test_error_messages_are_counted_within_their_bounds() -> None:
    t = Tally()
    for i in range(MAX_MESSAGES + 5):
        t.message(f"{i} " + "x" * 1000)
    t.message("0 " + "x" * 1000)
    messages = t.messages
    assert len(messages) == MAX_MESSAGES and all(len(m) == MAX_MESSAGE for m in messages)
    assert messages["0 " + "x" * (MAX_MESSAGE - 2)] == 2
    master = Tally()
    for _ in range(3):
        master.absorb(t.report())
        t.message("new " + "y" * 5)
    assert len(master.messages) == MAX_MESSAGES


@pytest.mark.parametrize("kind", ["status", "refused", ""])
def test_an_unknown_error_kind_is_refused(kind: str) -> None:
    t = Tally()
    with pytest.raises(ValueError, match="connect, read, write or timeout"):
        t.error(kind)
    assert t.errors == NO_ERRORS


def test_the_accessors_are_copies() -> None:
    t = Tally()
    t.record(200, 1, 1)
    t.statuses[200] = 99
    t.errors["read"] = 99
    assert (t.statuses, t.errors) == ({200: 1}, NO_ERRORS)


def test_a_report_is_json_safe_and_starts_the_tally_afresh() -> None:
    t = Tally()
    t.record(200, 100, 50)
    t.record(404, 300, 20)
    t.error("timeout")
    t.unanswered(5000)
    t.connected(7)
    t.message("m")
    t.sent, t.late = 3, 1
    report = t.report()
    assert report == {
        "requests": 2,
        "bytes": 70,
        "statuses": {"200": 1, "404": 1},
        "errors": {**NO_ERRORS, "timeout": 1, "status": 1},
        "latency": {
            "b": [[100, 1], [278, 1], [796, 1]],
            "n": 3,
            "sum": 5400,
            "min": 100,
            "max": 5000,
        },
        "connect": {"b": [[7, 1]], "n": 1, "sum": 7, "min": 7, "max": 7},
        "messages": {"m": 1},
        "steps": {},
        "sent": 3,
        "late": 1,
        "unanswered": 1,
        "dropped": 0,
    }
    assert json.loads(json.dumps(report)) == report
    assert (
        t.report()
        == Tally().report()
        == {
            "requests": 0,
            "bytes": 0,
            "statuses": {},
            "errors": NO_ERRORS,
            "latency": Histogram().to_json(),
            "connect": Histogram().to_json(),
            "messages": {},
            "steps": {},
            "sent": 0,
            "late": 0,
            "unanswered": 0,
            "dropped": 0,
        }
    )
    assert (t.requests, t.bytes, t.statuses, t.errors, t.latency.count) == (0, 0, {}, NO_ERRORS, 0)


def random_events(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    kinds = ("connect", "read", "write", "timeout")
    events: list[tuple[str, Any]] = []
    for _ in range(n):
        if rng.random() < 0.8:
            status = rng.choice((200, 200, 200, 204, 301, 404, 500, 503))
            events.append(("record", (status, rng.randint(0, 5_000_000), rng.randint(0, 10**5))))
        elif rng.random() < 0.5:
            events.append(("error", (rng.choice(kinds),)))
        elif rng.random() < 0.5:
            events.append(("unanswered", (rng.randint(0, 10**7), rng.random() < 0.5)))
        else:
            events.append(("connected", (rng.randint(0, 10**5),)))
    return events


def replay(t: Tally, events: list[tuple[str, Any]]) -> None:
    for name, args in events:
        getattr(t, name)(*args)


def test_the_sum_of_several_workers_reports_is_one_tally_of_everything() -> None:
    rng = random.Random(11)
    events = random_events(rng, 5000)
    everything = Tally()
    replay(everything, events)

    workers, master = [Tally() for _ in range(4)], Tally()
    for second in range(0, len(events), 700):  # a report every "second", from every worker
        for name, args in events[second : second + 700]:
            getattr(rng.choice(workers), name)(*args)
        for w in workers:
            master.absorb(json.loads(json.dumps(w.report())))  # as it crosses the channel
    assert master.report() == everything.report()


def test_absorbing_an_empty_report_changes_nothing() -> None:
    t = Tally()
    t.record(200, 10, 10)
    before = copy.deepcopy(t.report())
    t.absorb(before)
    t.absorb(Tally().report())
    assert t.report() == before


def good_report() -> dict[str, Any]:
    t = Tally()
    t.record(200, 100, 10)
    t.record(503, 200, 10)
    t.error("timeout")
    t.error("connect")
    t.unanswered(9000, sent=False)
    t.message("x")
    return t.report()


def changed(**changes: Any) -> dict[str, Any]:
    report = good_report()
    for path, value in changes.items():
        *outer, last = path.split("__")
        d = report
        for key in outer:
            d = d[key]
        if value is ...:
            del d[last]
        else:
            d[last] = value
    return report


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [1, 2],
        changed(bytes=...),
        changed(extra=1),
        changed(requests=2.0),
        changed(requests=True),
        changed(bytes=-1),
        changed(errors=[]),
        changed(errors__read=...),
        changed(errors__refused=0),
        changed(errors__read=-1),
        changed(errors__read=False),
        changed(statuses=[]),
        changed(statuses__200=1.0),
        changed(statuses__0200=1),
        changed(statuses__x=1),
        changed(**{"statuses__ 200": 1}),
        changed(**{"statuses__٢٠٠": 1}),  # digits, but not ASCII ones
        changed(requests=3),  # the statuses do not add up to the requests
        changed(errors__status=0),  # a 503 that is not a status error
        changed(statuses__503=..., statuses__504=1, errors__status=0),  # one that is not counted
        changed(latency__n=1, latency__b=[[100, 1]], latency__sum=100, latency__max=100),
        changed(unanswered=0),  # more latencies than responses and unanswered
        changed(dropped=2),  # more dropped than unanswered
        changed(sent=-1),
        changed(connect=None),
        changed(messages=[]),
        changed(messages__x=-1),
        changed(messages={str(i): 1 for i in range(MAX_MESSAGES + 1)}),
        changed(messages={"x" * (MAX_MESSAGE + 1): 1}),
        changed(latency=None),
    ],
)
def test_a_malformed_report_is_refused_and_changes_nothing(bad: Any) -> None:
    t = Tally()
    t.absorb(good_report())  # the base is fine
    before = copy.deepcopy(t)
    with pytest.raises(ValueError, match=r"report|histogram"):
        t.absorb(bad)
    assert t.report() == before.report()


def test_latencies_wait_to_be_binned_until_read_or_bin_every() -> None:
    tally = Tally()
    values = [random.Random(7).randrange(100_000) for _ in range(BIN_EVERY + 10)]
    exact = Histogram()
    for i, v in enumerate(values):
        tally.record(200 if i % 3 else 500, v, 10)
        exact.record(v)
        if i == BIN_EVERY - 2:
            assert tally._latency.count == 0  # all waiting
    assert tally._latency.count == BIN_EVERY and len(tally._pending) == 10  # binned at the cap
    assert tally.requests == len(values)  # reading bins the rest
    assert tally.latency.to_json() == exact.to_json()
    assert tally.succeeded == len(values) - tally.errors["status"]
    tally.record(200, 5, 1)
    assert tally.succeeded == len(values) - tally.errors["status"] + 1
    tally.record(200, 5, 1)
    assert tally.latency.count == len(values) + 2
    tally.record(200, 5, 1)
    report = tally.report()
    assert report["requests"] == report["latency"]["n"] == len(values) + 3
