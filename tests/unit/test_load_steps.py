"""Per-step statistics of scenarios: named or grouped by method and path, bounded whatever the
scenario names, added up across workers and runs exactly, in the summary and ``--json``."""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import pytest
from test_load_client import HELLO, Answer, FakeTally, Server, closed_port, run

from prefork.load import Tally, _steps
from prefork.load._merge import BadRun, merge
from prefork.load._scenario import Client, RequestError
from prefork.load._scenario_run import run_scenario
from prefork.load._steps import MAX_STEP_NAME, MAX_STEPS, OTHER, Steps, step_name
from prefork.load._summary import Second, document, text
from prefork.load._target import Target


def test_a_step_is_its_name_or_its_method_and_path_without_the_query() -> None:
    assert step_name("GET", "/users/7?x=1", None) == "GET /users/7"
    assert step_name("POST", "/login", "login") == "login"
    assert step_name("GET", "/", "") == ""
    with pytest.raises(TypeError, match="a step's name is a string, got 7"):
        step_name("GET", "/", 7)  # type: ignore[arg-type]


def test_a_step_counts_requests_errors_and_latencies() -> None:
    steps = Steps()
    steps.record("login", 1000, False)
    steps.record("login", 3000, True)  # a status >= 400: a latency and an error
    steps.record("login", None, True)  # no response: an error, no latency
    ((name, step),) = steps.items()
    assert (name, step.requests, step.errors, step.latency.count) == ("login", 3, 2, 2)


def test_a_million_distinct_names_hold_max_steps_and_other() -> None:
    steps = Steps()
    for i in range(1_000_000):
        steps.record(f"GET /item/{i}", i % 5000, False)
    items = dict(steps.items())
    assert len(items) == MAX_STEPS + 1
    assert items[OTHER].requests == 1_000_000 - MAX_STEPS
    assert list(items)[:2] == ["GET /item/0", "GET /item/1"]
    steps.record("x" * 10_000, 1, False)  # cut, and past the bound: (other)
    assert items[OTHER].requests == 1_000_000 - MAX_STEPS + 1
    report = json.dumps(steps.to_json())
    assert len(report) < 200_000  # a report stays far below a frame's 1 MiB
    long = Steps()
    long.record("y" * 10_000, 1, False)
    assert [name for name, _ in long.items()] == ["y" * MAX_STEP_NAME]


def random_steps(rng: random.Random, tally: Tally, n: int, names: int) -> list[Any]:
    events = []
    for _ in range(n):
        name = f"step {rng.randrange(names)}"
        latency = None if rng.random() < 0.1 else rng.randint(0, 10**6)
        events.append((name, latency, latency is None or rng.random() < 0.2))
    for event in events:
        tally.step(*event)
    return events


def test_workers_steps_add_up_in_the_master_within_the_bound() -> None:
    rng = random.Random(5)
    everything, master = Tally(), Tally()
    workers = [Tally() for _ in range(3)]
    events = random_steps(rng, everything, 3000, 50)
    for start in range(0, len(events), 500):
        for event in events[start : start + 500]:
            rng.choice(workers).step(*event)
        for w in workers:
            master.absorb(json.loads(json.dumps(w.report())))
    assert {n: s.to_json() for n, s in master.steps.items()} == {
        n: s.to_json() for n, s in everything.steps.items()
    }
    # Many workers, each with names of its own: the master still keeps MAX_STEPS and OTHER.
    for k in range(4):
        t = Tally()
        for i in range(MAX_STEPS):
            t.step(f"w{k} {i}", 10, False)
        master.absorb(t.report())
    assert len(master.steps) == MAX_STEPS + 1
    total = sum(s.requests for _, s in master.steps.items())
    assert total == 3000 + 4 * MAX_STEPS


def good_report() -> dict[str, Any]:
    t = Tally()
    t.record(200, 100, 10)
    t.step("a", 100, False)
    t.step("a", None, True)
    return t.report()


def with_steps(steps: Any) -> dict[str, Any]:
    return good_report() | {"steps": steps}


def step_doc(requests: int = 2, errors: int = 1, n: int = 1) -> dict[str, Any]:
    latency = {"b": [[100, n]], "n": n, "sum": 100 * n, "min": 100, "max": 100}
    return {"requests": requests, "errors": errors, "latency": latency}


@pytest.mark.parametrize(
    "bad",
    [
        with_steps([]),
        with_steps({f"s{i}": step_doc() for i in range(MAX_STEPS + 2)}),
        with_steps({"x" * (MAX_STEP_NAME + 1): step_doc()}),
        with_steps({"a": 1}),
        with_steps({"a": step_doc() | {"extra": 1}}),
        with_steps({"a": step_doc(requests=-1)}),
        with_steps({"a": step_doc(errors=True)}),
        with_steps({"a": step_doc(errors=3)}),  # more errors than requests
        with_steps({"a": step_doc(n=3, requests=2)}),  # more latencies than requests
        with_steps({"a": step_doc() | {"latency": None}}),
    ],
)
def test_a_malformed_step_is_refused_and_changes_nothing(bad: dict[str, Any]) -> None:
    t = Tally()
    t.absorb(good_report())
    before = copy.deepcopy(t.report())
    t.absorb(before)
    with pytest.raises(ValueError, match=r"step|histogram"):
        t.absorb(bad)
    assert t.report() == before
    assert _steps.from_json(with_steps({"a": step_doc()})["steps"])["a"].requests == 2


def doc_of(t: Tally) -> dict[str, Any]:
    doc = document(
        t,
        duration=1.0,
        config={"url": "http://x/", "connections": 1, "rate": None},
        started=0.0,
        ended=1.0,
        series=[Second(1, t.requests, t.failed, t.latency)],
        version="1",
        closed_loop=False,
    )
    return json.loads(json.dumps(doc))  # type: ignore[no-any-return]


def stepped(*names: str) -> Tally:
    t = Tally()
    for i, name in enumerate(names):
        t.record(200, 1000 * (i + 1), 10)
        t.step(name, 1000 * (i + 1), False)
    return t


def test_the_document_and_the_text_hold_the_steps() -> None:
    t = stepped("login", "login", "GET /items")
    t.error("connect")
    t.step("login", None, True)
    doc = doc_of(t)
    login = doc["steps"]["login"]
    assert (login["requests"], login["errors"], login["p50"], login["max"]) == (3, 1, 1.0015, 2.0)
    assert login["latency_us"] == {"count": 2, "sum": 3000, "min": 1000, "max": 2000}
    assert set(login) == {"requests", "errors", "p50", "p90", "p99", "max"} | {
        "latency_us",
        "latency_hdr",
    }
    out = text(doc, 1)
    assert "  Step           Requests   Errors        p50        p90        p99        max" in out
    assert "  login                 3        1     1.00ms     2.00ms     2.00ms     2.00ms" in out
    assert "  GET /items            1        0     3.00ms" in out and OTHER not in out
    assert "steps" not in doc_of(stepped())  # no scenario, no steps


def test_other_is_said_once_in_the_text() -> None:
    t = stepped(*(f"s{i}" for i in range(MAX_STEPS + 5)))
    out = text(doc_of(t), 1)
    assert out.count(OTHER) == 2  # its row, and the line saying what it holds
    assert f"the steps past the first {MAX_STEPS} names" in out


def test_merge_adds_steps_exactly_and_keeps_the_bound() -> None:
    a, b = stepped("login", "list"), stepped("login", "other list")
    merged = merge([doc_of(a), doc_of(b)])
    whole = Tally()
    whole.absorb(a.report())
    whole.absorb(b.report())
    assert merged["steps"] == doc_of(whole)["steps"]
    assert merged["steps"]["login"]["requests"] == 2
    assert "steps" not in merge([doc_of(stepped())])
    many = [doc_of(stepped(*(f"r{r} s{i}" for i in range(MAX_STEPS)))) for r in range(3)]
    merged = merge(many)
    assert len(merged["steps"]) == MAX_STEPS + 1
    assert merged["steps"][OTHER]["requests"] == 2 * MAX_STEPS


def broken(change: Any) -> list[Any]:
    doc = doc_of(stepped("a"))
    change(doc["steps"])
    return [doc]


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        (broken(lambda s: s.update(b=[])), "step 'b' is not a step"),
        (broken(lambda s: s.update({"x" * 101: {}})), "is not a step"),
        (broken(lambda s: s["a"].update(requests=-1)), "step 'a': 'requests' is not a count"),
        (broken(lambda s: s["a"].update(errors=2)), "more errors or latencies than requests"),
        (broken(lambda s: s["a"].update(requests=0)), "more errors or latencies than requests"),
        (broken(lambda s: s["a"].pop("latency_hdr")), "step 'a': 'latency_us' or 'latency_hdr'"),
        (broken(lambda s: s["a"]["latency_us"].update(count=5)), "does not hold 'latency_us'"),
        (broken(lambda s: s.update({f"{i}": s["a"] for i in range(MAX_STEPS + 1)})), "at most"),
        ([doc_of(stepped("a")) | {"steps": []}], "'steps' is not at most 101 steps"),
    ],
)
def test_merge_refuses_malformed_steps(docs: list[Any], message: str) -> None:
    with pytest.raises(BadRun, match=message):
        merge(docs)


# the client


def test_a_scenarios_requests_are_counted_by_step() -> None:
    async def scenario(client: Client) -> None:
        await client.get("/items?page=2")
        await client.post("/login", b"user", name="login")
        await client.request("PUT", "/x", name="put")
        async with client.timed():
            pass
        async with client.timed(status=503, name="ws"):
            pass

    async def main() -> FakeTally:
        server = await Server(lambda n, request: Answer(HELLO)).start()
        tally = FakeTally()
        await run_scenario(
            scenario, Target(server.url()), 1, time.monotonic() + 0.2, tally, timeout=1.0
        )
        await server.stop()
        return tally

    tally = run(main)
    names = [name for name, _, _ in tally.steps]
    assert names[:5] == ["GET /items", "login", "put", "timed", "ws"]
    assert all(latency is not None for _, latency, _ in tally.steps)
    assert {(n, failed) for n, _, failed in tally.steps if n == "ws"} == {("ws", True)}
    assert len(tally.steps) == len(tally.records) + len(tally.unanswered_at_end)


def test_a_failed_step_has_no_latency() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        client = Client(Target(f"http://127.0.0.1:{closed_port()}/"), tally, timeout=1.0)
        with pytest.raises(RequestError):
            await client.get("/a", name="first")
        with pytest.raises(RequestError):
            async with client.timed(name="block"):
                raise ValueError("broken")
        return tally

    tally = run(main)
    assert tally.steps == [("first", None, True), ("block", None, True)]


def test_a_step_name_that_is_not_a_string_fails_before_sending() -> None:
    async def main() -> FakeTally:
        tally = FakeTally()
        client = Client(Target("http://127.0.0.1:9/"), tally, timeout=1.0)
        with pytest.raises(TypeError):
            await client.get("/", name=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            async with client.timed(name=None):  # type: ignore[arg-type]
                pass
        assert not client._busy
        return tally

    tally = run(main)
    assert tally.steps == [] and tally.errors == [] and tally.sent == 0
