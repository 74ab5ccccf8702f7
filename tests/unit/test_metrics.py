"""The master's metric store: workers' reports added up, checked, capped and rendered.

Render results are compared to whole expected texts; each rule a hostile worker could break
has a sample that breaks it; hypothesis throws arbitrary JSON at ``report`` and checks that
the exposition still parses line by line.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.ops import _metric_series, _metrics, _metrics_text
from prefork.ops._metric_series import pieces
from prefork.ops._metrics import MetricStore

BOUNDS = [0.1, 1.0, 10.0]


def counter(name: object = "jobs_total", value: object = 1, **extra: object) -> dict[str, Any]:
    return {"name": name, "type": "counter", "value": value, **extra}


def gauge(name: str = "queue_depth", value: object = 1, **extra: object) -> dict[str, Any]:
    return {"name": name, "type": "gauge", "value": value, **extra}


def histogram(
    name: str = "job_seconds",
    counts: object = (0, 0, 0, 0),
    total: object = 0.0,
    buckets: object = BOUNDS,
    **extra: object,
) -> dict[str, Any]:
    counts = list(counts) if isinstance(counts, tuple) else counts
    return {
        "name": name,
        "type": "histogram",
        "buckets": buckets,
        "counts": counts,
        "sum": total,
        **extra,
    }


def test_the_store_is_pure() -> None:
    """No I/O and no clock (design.md): the store imports nothing that touches the OS."""
    effects = {"os", "socket", "signal", "time", "selectors", "subprocess", "asyncio", "io"}
    for module in (_metrics, _metrics_text, _metric_series):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert {name.split(".")[0] for name in imported} & effects == set()


# -- the exposition, whole -------------------------------------------------------------------


def test_a_small_store_renders_counters_summed_gauges_and_cumulative_buckets() -> None:
    store = MetricStore()
    first = [
        counter(value=3, labels={"queue": "high"}, help="Jobs done."),
        gauge(value=17),
        histogram(counts=(4, 1, 0, 0), total=2.5),
    ]
    second = [
        counter(value=2, labels={"queue": "high"}),
        counter(value=1, labels={"queue": "low"}),
        gauge(value=5),
        histogram(counts=(0, 2, 1, 1), total=30.25, buckets=[0.1, 1, 10]),
    ]
    assert store.report("jobs", 1, first) == []
    assert store.report("jobs", 2, second) == []
    assert store.render() == (
        "# TYPE job_seconds histogram\n"
        'job_seconds_bucket{broker="jobs",le="0.1"} 4\n'
        'job_seconds_bucket{broker="jobs",le="1.0"} 7\n'
        'job_seconds_bucket{broker="jobs",le="10.0"} 8\n'
        'job_seconds_bucket{broker="jobs",le="+Inf"} 9\n'
        'job_seconds_sum{broker="jobs"} 32.75\n'
        'job_seconds_count{broker="jobs"} 9\n'
        "# HELP jobs_total Jobs done.\n"
        "# TYPE jobs_total counter\n"
        'jobs_total{broker="jobs",queue="high"} 5\n'
        'jobs_total{broker="jobs",queue="low"} 1\n'
        "# TYPE queue_depth gauge\n"
        'queue_depth{broker="jobs"} 22\n'
    )
    store.forget(2)
    assert store.render() == (
        "# TYPE job_seconds histogram\n"
        'job_seconds_bucket{broker="jobs",le="0.1"} 4\n'
        'job_seconds_bucket{broker="jobs",le="1.0"} 7\n'
        'job_seconds_bucket{broker="jobs",le="10.0"} 8\n'
        'job_seconds_bucket{broker="jobs",le="+Inf"} 9\n'
        'job_seconds_sum{broker="jobs"} 32.75\n'
        'job_seconds_count{broker="jobs"} 9\n'
        "# HELP jobs_total Jobs done.\n"
        "# TYPE jobs_total counter\n"
        'jobs_total{broker="jobs",queue="high"} 5\n'
        'jobs_total{broker="jobs",queue="low"} 1\n'
        "# TYPE queue_depth gauge\n"
        'queue_depth{broker="jobs"} 17\n'
    )


def test_an_empty_store_renders_nothing() -> None:
    assert MetricStore().render() == ""
    assert MetricStore().report("http", 1, None) == []


def test_help_and_label_values_are_escaped() -> None:
    store = MetricStore()
    labels = {"path": 'C:\\dir\\"x"\nnext', "plain": "ok"}
    assert store.report("http", 1, [counter(labels=labels, help='a \\ b\nc "q"')]) == []
    assert store.render() == (
        '# HELP jobs_total a \\\\ b\\nc "q"\n'
        "# TYPE jobs_total counter\n"
        'jobs_total{broker="http",path="C:\\\\dir\\\\\\"x\\"\\nnext",plain="ok"} 1\n'
    )


def test_families_are_sorted_by_name_and_series_by_labels_given_in_any_order() -> None:
    store = MetricStore()
    samples = [
        gauge("b", 1, labels={"z": "1", "a": "2"}),
        gauge("a", 1, labels={"k": "y"}),
        gauge("a", 1, labels={"k": "x"}),
        gauge("b", 2, labels={"a": "2", "z": "1"}),  # the same series as the first: replaces it
    ]
    assert store.report("w", 1, samples) == []
    assert store.report("v", 1, [gauge("a", 5, labels={"k": "y"})]) == []
    assert store.render() == (
        "# TYPE a gauge\n"
        'a{broker="v",k="y"} 5\n'
        'a{broker="w",k="x"} 1\n'
        'a{broker="w",k="y"} 1\n'
        "# TYPE b gauge\n"
        'b{a="2",broker="w",z="1"} 2\n'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (3.0, "3"),
        (0.5, "0.5"),
        (-2.25, "-2.25"),
        (-0.0, "0"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (10**20, "1e+20"),
    ],
)
def test_numbers_print_as_prometheus_reads_them(value: float, text: str) -> None:
    store = MetricStore()
    assert store.report("w", 1, [gauge("g", value)]) == []
    assert store.render() == f'# TYPE g gauge\ng{{broker="w"}} {text}\n'


def test_a_histogram_with_no_bounds_has_only_the_inf_bucket_and_whole_float_counts() -> None:
    store = MetricStore()
    assert store.report("w", 1, [histogram("h", [2.0], 1.5, buckets=[])]) == []
    assert store.render() == (
        "# TYPE h histogram\n"
        'h_bucket{broker="w",le="+Inf"} 2\n'
        'h_sum{broker="w"} 1.5\n'
        'h_count{broker="w"} 2\n'
    )


# -- what lasts and what goes ------------------------------------------------------------------


def test_counters_and_histograms_outlive_their_worker_gauges_do_not() -> None:
    store = MetricStore()
    samples = [counter(value=4), histogram(counts=(1, 0, 0, 0)), gauge(value=9)]
    assert store.report("jobs", 7, samples) == []
    store.forget(7)
    store.forget(7)  # twice is harmless
    store.forget(8)  # a worker that never reported
    rendered = store.render()
    assert 'jobs_total{broker="jobs"} 4\n' in rendered
    assert 'job_seconds_count{broker="jobs"} 1\n' in rendered
    assert "queue_depth" not in rendered
    # The name is free again: the type is not remembered once the gauge family is gone.
    assert store.report("jobs", 9, [counter("queue_depth", 1)]) == []


def test_a_gauge_is_the_current_value_per_worker_not_a_total() -> None:
    store = MetricStore()
    store.report("w", 1, [gauge(value=10)])
    store.report("w", 1, [gauge(value=4)])
    store.report("w", 2, [gauge(value=1)])
    assert 'queue_depth{broker="w"} 5\n' in store.render()
    store.forget(1)
    assert 'queue_depth{broker="w"} 1\n' in store.render()


def test_forgetting_one_worker_keeps_the_series_other_workers_hold() -> None:
    store = MetricStore()
    store.report("w", 1, [gauge("g", 1, labels={"k": "a"}), gauge("g", 2, labels={"k": "b"})])
    store.report("w", 2, [gauge("g", 3, labels={"k": "b"})])
    store.forget(2)
    assert store.render() == '# TYPE g gauge\ng{broker="w",k="a"} 1\ng{broker="w",k="b"} 2\n'
    store.forget(1)
    assert store.render() == ""


def test_the_first_help_seen_wins_and_a_later_one_fills_an_empty_one() -> None:
    store = MetricStore()
    store.report("w", 1, [counter("a"), counter("b", help="First.")])
    store.report("w", 1, [counter("a", help="Late."), counter("b", help="Second.")])
    assert store.render() == (
        "# HELP a Late.\n# TYPE a counter\n" + 'a{broker="w"} 2\n'
        "# HELP b First.\n# TYPE b counter\n" + 'b{broker="w"} 2\n'
    )


# -- refusals ----------------------------------------------------------------------------------

LONG = "x" * 201

BAD_SAMPLES = [
    pytest.param(5, "a sample must be an object, not 5", id="int"),
    pytest.param([1], "a sample must be an object, not a list", id="list"),
    pytest.param("s", "a sample must be an object, not 's'", id="str"),
    pytest.param((), "a sample must be an object, not a tuple", id="tuple"),
    pytest.param({"type": "counter"}, "'name' must be a string, not None", id="no-name"),
    pytest.param(counter(5), "'name' must be a string, not 5", id="int-name"),
    pytest.param(counter("x y"), "metric 'x y' has a bad name", id="space-in-name"),
    pytest.param(counter("1x"), "has a bad name", id="digit-first"),
    pytest.param(counter("__x"), "has a bad name", id="reserved-name"),
    pytest.param(counter(""), "has a bad name", id="empty-name"),
    pytest.param(counter(LONG), "metric 'xxxxxxxxxxxx", id="long-name"),
    pytest.param({"name": "x", "type": "summary"}, "has the type 'summary', not", id="type"),
    pytest.param({"name": "x"}, "has the type None, not counter", id="no-type"),
    pytest.param({"name": "x", "type": ["gauge"]}, "has the type a list", id="list-type"),
    pytest.param({"name": "x", "type": "counter"}, "needs a 'value' >= 0", id="no-value"),
    pytest.param(counter(value=True), "not True", id="bool-value"),
    pytest.param(counter(value="3"), "not '3'", id="str-value"),
    pytest.param(counter(value=math.nan), "not nan", id="nan"),
    pytest.param(counter(value=math.inf), "not inf", id="inf"),
    pytest.param(counter(value=-1), "needs a 'value' >= 0 (finite), not -1", id="negative"),
    pytest.param(counter(value=10**400), "not a huge integer", id="huge-int"),
    pytest.param(gauge(value=False), "not False", id="bool-gauge"),
    pytest.param(gauge(value=-math.inf), "not -inf", id="inf-gauge"),
    pytest.param(gauge(value=1e305), "within 8.99e+303 of 0", id="gauge-too-large"),
    pytest.param(counter(help=5), "has a bad 'help'", id="int-help"),
    pytest.param(counter(help=None), "has a bad 'help'", id="null-help"),
    pytest.param(counter(help=LONG), "has a bad 'help'", id="long-help"),
    pytest.param(counter(help="\ud800"), "has a bad 'help'", id="surrogate-help"),
    pytest.param(counter(labels=["a"]), "has 'labels' that are not an object: a list", id="list"),
    pytest.param(counter(labels="a=b"), "that are not an object: 'a=b'", id="str-labels"),
    pytest.param(
        counter(labels={f"l{i}": "v" for i in range(17)}), "has 17 labels (at most 16)", id="17"
    ),
    pytest.param(counter(labels={"a": 5}), "has a label that is not text: 'a'=5", id="int-value"),
    pytest.param(counter(labels={"a": None}), "not text: 'a'=None", id="null-label-value"),
    pytest.param(counter(labels={1: "a"}), "not text: 1='a'", id="int-label-name"),
    pytest.param(counter(labels={"a-b": "v"}), "has a bad label name 'a-b'", id="dash"),
    pytest.param(counter(labels={"1a": "v"}), "has a bad label name '1a'", id="digit"),
    pytest.param(counter(labels={"__a": "v"}), "has a bad label name '__a'", id="dunder"),
    pytest.param(counter(labels={LONG: "v"}), "has a bad label name 'xxx", id="long-label"),
    pytest.param(counter(labels={"": "v"}), "has a bad label name ''", id="empty-label"),
    pytest.param(
        counter(labels={"broker": "other"}), "has the reserved label name 'broker'", id="broker"
    ),
    pytest.param(
        gauge(labels={"le": "1", "broker": "x"}), "reserved label name 'broker'", id="broker-2"
    ),
    pytest.param(histogram(labels={"le": "1"}), "reserved label name 'le'", id="le"),
    pytest.param(counter(labels={"a": LONG}), "bad value for the label 'a'", id="long-value"),
    pytest.param(counter(labels={"a": "\udcff"}), "bad value for the label 'a'", id="surrogate"),
    pytest.param(histogram(total=None), "needs a finite number as 'sum', not None", id="no-sum"),
    pytest.param(histogram(total=math.nan), "as 'sum', not nan", id="nan-sum"),
    pytest.param(histogram(total=True), "as 'sum', not True", id="bool-sum"),
    pytest.param(histogram(buckets=None), "needs 'buckets': a list of at most 32", id="none"),
    pytest.param(histogram(buckets=list(range(33))), "at most 32 upper bounds", id="33-bounds"),
    pytest.param(histogram(buckets=[1, 1, 2]), "do not strictly increase", id="equal-bounds"),
    pytest.param(histogram(buckets=[2, 1, 3]), "do not strictly increase", id="decreasing"),
    pytest.param(histogram(buckets=[1, math.nan, 3]), "not a finite number: nan", id="nan-bound"),
    pytest.param(histogram(buckets=[True, 2, 3]), "not a finite number: True", id="bool-bound"),
    pytest.param(histogram(counts=[0, 0, 0]), "needs 'counts': a list of 4 numbers", id="3-counts"),
    pytest.param(histogram(counts=(0, 0, 0, 0, 0)), "a list of 4 numbers", id="5-counts"),
    pytest.param(histogram(counts={"a": 1}), "a list of 4 numbers", id="object-counts"),
    pytest.param(
        histogram(counts=(0, -1, 0, 0)), "not a whole number from 0 to 2**53: -1", id="-1"
    ),
    pytest.param(histogram(counts=(0, 1.5, 0, 0)), "whole number from 0 to 2**53: 1.5", id="1.5"),
    pytest.param(histogram(counts=(True, 0, 0, 0)), "from 0 to 2**53: True", id="bool-count"),
    pytest.param(histogram(counts=(0, 0, "1", 0)), "from 0 to 2**53: '1'", id="str-count"),
    pytest.param(histogram(counts=(0, 0, 0, 2**53 + 1)), "to 2**53: 9007199254740993", id="big"),
    pytest.param(histogram(counts=(0, math.inf, 0, 0)), "to 2**53: inf", id="inf-count"),
]


@pytest.mark.parametrize(("sample", "reason"), BAD_SAMPLES)
def test_a_bad_sample_is_refused_with_its_reason_and_the_good_ones_still_apply(
    sample: object, reason: str
) -> None:
    store = MetricStore()
    refusals = store.report("http", 1, [counter("good_total", 2), sample, gauge("good", 3)])
    assert len(refusals) == 1
    assert reason in refusals[0]
    assert "\n" not in refusals[0]
    assert store.render() == (
        '# TYPE good gauge\ngood{broker="http"} 3\n'
        '# TYPE good_total counter\ngood_total{broker="http"} 2\n'
    )


def test_a_refusal_shows_a_long_value_cut_short() -> None:
    [refusal] = MetricStore().report("w", 1, [counter("a" * 100, labels=[])])
    assert refusal == f"metric '{'a' * 60}'... has 'labels' that are not an object: a list"


def test_metrics_that_are_not_a_list_are_one_refusal() -> None:
    store = MetricStore()
    assert store.report("w", 1, {"name": "a"}) == [
        "'metrics' must be a list of samples, not an object"
    ]
    assert store.report("w", 1, "x") == ["'metrics' must be a list of samples, not 'x'"]
    assert store.render() == ""


def test_unknown_keys_are_ignored_and_le_is_only_reserved_for_histograms() -> None:
    store = MetricStore()
    assert store.report("w", 1, [gauge("g", 1, labels={"le": "x"}, unit="s", extra=[1])]) == []
    assert store.render() == '# TYPE g gauge\ng{broker="w",le="x"} 1\n'


def test_a_name_keeps_its_first_type() -> None:
    store = MetricStore()
    assert store.report("w", 1, [counter("x"), gauge("y"), histogram("z")]) == []
    assert store.report("w", 2, [gauge("x"), histogram("x"), counter("y"), gauge("z")]) == [
        "metric 'x' is a counter, not a gauge",
        "metric 'x' is a counter, not a histogram",
        "metric 'y' is a gauge, not a counter",
        "metric 'z' is a histogram, not a gauge",
    ]


def test_names_whose_lines_would_mix_with_a_histograms_are_refused() -> None:
    store = MetricStore()
    assert store.report("w", 1, [histogram("h"), counter("c_count"), gauge("g_sum")]) == []
    assert store.report("w", 1, [counter("h_count"), gauge("h_bucket"), counter("h_sum")]) == [
        "metric 'h_count' would print lines of the same name as the family 'h'",
        "metric 'h_bucket' would print lines of the same name as the family 'h'",
        "metric 'h_sum' would print lines of the same name as the family 'h'",
    ]
    assert store.report("w", 1, [histogram("c"), histogram("g"), histogram("h_sum")]) == [
        "metric 'c' would print lines of the same name as the family 'c_count'",
        "metric 'g' would print lines of the same name as the family 'g_sum'",
    ]


def test_the_bounds_of_a_histogram_series_never_change() -> None:
    store = MetricStore()
    assert store.report("w", 1, [histogram(counts=(1, 0, 0, 0), total=0.05)]) == []
    refusals = store.report(
        "w",
        2,
        [
            histogram(buckets=[0.1, 1.0], counts=(1, 0, 0)),
            histogram(buckets=[0.1, 1.0, math.nan]),
            histogram(buckets="0.1,1,10"),
            # Another series of the same name may have its own bounds.
            histogram(buckets=[1.0], counts=(0, 1), total=2, labels={"queue": "low"}),
        ],
    )
    assert (
        refusals
        == ["metric 'job_seconds' has buckets that differ from the ones this series started with"]
        * 3
    )
    assert 'job_seconds_count{broker="w"} 1\n' in store.render()
    assert 'job_seconds_bucket{broker="w",le="1.0",queue="low"}' not in store.render()
    assert 'job_seconds_bucket{broker="w",queue="low",le="1.0"} 0\n' in store.render()


def test_totals_that_would_overflow_are_refused() -> None:
    store = MetricStore()
    big = [counter("c", 1e308), histogram("h", total=1e308)]
    assert store.report("w", 1, big) == []
    assert store.report("w", 1, big) == [
        "metric 'c' would overflow its total",
        "metric 'h' would overflow its sum",
    ]
    assert 'c{broker="w"} 1e+308\n' in store.render()
    assert 'h_sum{broker="w"} 1e+308\n' in store.render()


def test_gauges_summed_over_the_series_cap_stay_finite() -> None:
    store = MetricStore(max_series=2)
    limit = 1.7976931348623157e308 / 4
    assert store.report("w", 1, [gauge("g", limit)]) == []
    assert store.report("w", 2, [gauge("g", -limit * 1.0001)]) == [
        "metric 'g' needs a 'value' that is a finite number within 4.49e+307 of 0, "
        f"not {-limit * 1.0001!r}"
    ]
    assert store.report("w", 2, [gauge("g", limit)]) == []
    assert math.isfinite(float(store.render().split()[-1]))


# -- the series cap ----------------------------------------------------------------------------


def test_every_counter_histogram_and_gauge_value_counts_toward_the_cap() -> None:
    store = MetricStore(max_series=4)
    full = "would start a new series, and the store holds its limit of 4"
    assert store.report("w", 1, [counter("c"), histogram("h"), gauge("g")]) == []
    assert store.report("w", 2, [gauge("g")]) == []  # a second worker's value of the series
    assert store.report("w", 3, [gauge("g"), counter("d"), histogram("h", labels={"q": "x"})]) == [
        f"metric 'g' {full}",
        f"metric 'd' {full}",
        f"metric 'h' {full}",
    ]
    # The series already stored still take samples at the cap.
    assert store.report("w", 1, [counter("c"), histogram("h"), gauge("g", 5)]) == []
    assert store.render().count("\n") == 2 + 2 + 7
    # A worker that leaves frees its gauge values.
    store.forget(2)
    assert store.report("w", 3, [gauge("g", 1)]) == []
    assert store.report("w", 3, [gauge("other", 1)]) == [f"metric 'other' {full}"]


def test_a_cap_of_zero_refuses_every_worker_series() -> None:
    store = MetricStore(max_series=0)
    assert len(store.report("w", 1, [counter(), gauge(), histogram()])) == 3
    assert store.render() == ""


# -- across an in-place upgrade ---------------------------------------------------------------


def carried(store: MetricStore, **caps: int) -> MetricStore:
    """``store`` as the next image of the master has it: exported, through JSON, adopted."""
    again = MetricStore(**caps)
    again.adopt(json.loads(json.dumps(store.export())))
    return again


def test_every_total_goes_across_an_upgrade_and_counts_against_the_caps_as_before() -> None:
    store = MetricStore(max_series=5)
    assert (
        store.report("w", 1, [counter(help="Jobs."), histogram(counts=(1, 2, 0, 1), total=9)]) == []
    )
    assert store.report("w", 1, [gauge("g", 3), gauge("g", 2, labels={"q": "a"})]) == []
    assert store.report("w", 2, [gauge("g", 4)]) == []
    store.inc("prefork_worker_starts_total", {"broker": "w"}, 3, help="Workers started.")
    store.observe("prefork_reload_duration_seconds", {"broker": "w"}, 0.7, [0.5, 1])
    store.set_gauges("prefork_workers", "Workers.", {(("state", "ready"),): 2})
    again = carried(store, max_series=5)
    assert again.render() == store.render()
    full = "would start a new series, and the store holds its limit of 5"
    assert again.report("w", 3, [gauge("g", 1)]) == [f"metric 'g' {full}"]  # 5 held already
    again.forget(2)  # its gauge value goes; the series stays for worker 1
    assert 'g{broker="w"} 3' in again.render()
    refused = again.report("w", 3, [counter("new_total"), counter("newer_total")])
    assert refused == [f"metric 'newer_total' {full}"]
    again.forget(1)  # the last values of the gauge series: the family goes
    assert "# TYPE g gauge" not in again.render()
    assert 'jobs_total{broker="w"} 1' in again.render()
    # the bytes charged went across too: a store just full in bytes stays full
    tight = MetricStore(max_bytes=len(store.render()) // 2)
    assert tight.report("w", 1, [counter(help="Jobs.")]) == []
    assert carried(tight, max_bytes=tight.max_bytes).report("w", 1, [counter("x" * 9999)])


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: d.pop("gauges"), KeyError),
        (lambda d: d["counters"]["c"].update(kind="summary"), ValueError),
        (lambda d: d["counters"]["c"]["series"][0].update(total="many"), ValueError),
        (lambda d: d["histograms"]["h"]["series"][0].update(counts=[1]), ValueError),
    ],
)
def test_totals_that_are_not_a_store_are_refused(change: Any, error: type[Exception]) -> None:
    store = MetricStore()
    assert store.report("w", 1, [counter("c"), histogram("h")]) == []
    doc = json.loads(json.dumps(store.export()))
    change(doc)
    with pytest.raises(error):
        MetricStore().adopt(doc)


# -- the master's own metrics ------------------------------------------------------------------


def test_the_masters_own_counter_histogram_and_gauges() -> None:
    store = MetricStore(max_series=0)  # the master's own series are not capped
    store.inc("prefork_worker_starts_total", {"broker": "http"}, help="Workers started.")
    store.inc("prefork_worker_starts_total", {"broker": "http"}, 2)
    store.inc("prefork_reloads_total", {}, help="Reloads.")
    store.observe("prefork_reload_duration_seconds", {"broker": "http"}, 0.5, [0.5, 1, 5])
    store.observe("prefork_reload_duration_seconds", {"broker": "http"}, 7, [0.5, 1.0, 5.0])
    store.observe("prefork_reload_duration_seconds", {}, 1.5, [1.0], help="Reload time.")
    ready = (("broker", "http"), ("state", "ready"))
    store.set_gauges("prefork_workers", "Workers by state.", {ready: 2, (("broker", "http"),): 1})
    assert store.render() == (
        "# HELP prefork_reload_duration_seconds Reload time.\n"
        "# TYPE prefork_reload_duration_seconds histogram\n"
        'prefork_reload_duration_seconds_bucket{le="1.0"} 0\n'
        'prefork_reload_duration_seconds_bucket{le="+Inf"} 1\n'
        "prefork_reload_duration_seconds_sum 1.5\n"
        "prefork_reload_duration_seconds_count 1\n"
        'prefork_reload_duration_seconds_bucket{broker="http",le="0.5"} 1\n'
        'prefork_reload_duration_seconds_bucket{broker="http",le="1.0"} 1\n'
        'prefork_reload_duration_seconds_bucket{broker="http",le="5.0"} 1\n'
        'prefork_reload_duration_seconds_bucket{broker="http",le="+Inf"} 2\n'
        'prefork_reload_duration_seconds_sum{broker="http"} 7.5\n'
        'prefork_reload_duration_seconds_count{broker="http"} 2\n'
        "# HELP prefork_reloads_total Reloads.\n"
        "# TYPE prefork_reloads_total counter\n"
        "prefork_reloads_total 1\n"
        "# HELP prefork_worker_starts_total Workers started.\n"
        "# TYPE prefork_worker_starts_total counter\n"
        'prefork_worker_starts_total{broker="http"} 3\n'
        "# HELP prefork_workers Workers by state.\n"
        "# TYPE prefork_workers gauge\n"
        'prefork_workers{broker="http"} 1\n'
        'prefork_workers{broker="http",state="ready"} 2\n'
    )


def test_set_gauges_replaces_every_series_and_labels_may_come_unsorted() -> None:
    store = MetricStore()
    store.set_gauges("g", "", {(("b", "1"),): 1, (("b", "2"),): 2})
    store.set_gauges("g", "Late help.", {(("z", "1"), ("a", "2")): 3, (("b", "2"),): 4})
    assert store.render() == ('# HELP g Late help.\n# TYPE g gauge\ng{a="2",z="1"} 3\ng{b="2"} 4\n')
    store.set_gauges("g", "", {})
    assert store.render() == ""  # a family with no series is left out


def test_a_worker_cannot_report_into_the_masters_metrics() -> None:
    store = MetricStore()
    store.inc("prefork_worker_starts_total", {"broker": "http"})
    store.set_gauges("prefork_workers", "", {})
    store.observe("prefork_reload_duration_seconds", {}, 1, [1])
    refusals = store.report(
        "http",
        1,
        [
            counter("prefork_worker_starts_total", 100),
            gauge("prefork_workers", 100),
            histogram("prefork_reload_duration_seconds", buckets=[1], counts=(1, 0)),
            gauge("prefork_reload_duration_seconds_count", 5),
        ],
    )
    assert refusals == [
        "metric 'prefork_worker_starts_total' is one of the master's own metrics",
        "metric 'prefork_workers' is one of the master's own metrics",
        "metric 'prefork_reload_duration_seconds' is one of the master's own metrics",
        "metric 'prefork_reload_duration_seconds_count' would print lines of the same name as "
        "the family 'prefork_reload_duration_seconds'",
    ]
    assert 'prefork_worker_starts_total{broker="http"} 1\n' in store.render()


def test_the_master_takes_a_name_over_from_the_workers_and_frees_their_series() -> None:
    store = MetricStore(max_series=7)
    samples = [
        counter("starts", 50),
        gauge("workers", 50),
        histogram("lat"),
        counter("reload_count"),
        gauge("reload_sum"),
        counter("keep_total"),
    ]
    assert store.report("http", 1, samples) == []
    assert store.report("http", 2, [gauge("workers", 50)]) == []
    store.inc("starts", {"broker": "http"})
    store.set_gauges("workers", "Workers.", {(("broker", "http"),): 2})
    store.observe("lat", {}, 1, [1.0])
    store.observe("reload", {}, 1, [1.0])  # its lines would mix with reload_count, reload_sum
    store.forget(1)  # its value of "workers" went with the takeover: no second uncount
    store.forget(2)
    assert store.render() == (
        '# TYPE keep_total counter\nkeep_total{broker="http"} 1\n'
        "# TYPE lat histogram\n"
        'lat_bucket{le="1.0"} 1\nlat_bucket{le="+Inf"} 1\nlat_sum 1\nlat_count 1\n'
        "# TYPE reload histogram\n"
        'reload_bucket{le="1.0"} 1\nreload_bucket{le="+Inf"} 1\nreload_sum 1\nreload_count 1\n'
        '# TYPE starts counter\nstarts{broker="http"} 1\n'
        '# HELP workers Workers.\n# TYPE workers gauge\nworkers{broker="http"} 2\n'
    )
    # Only keep_total is left of the workers' series: six more fit, the seventh does not.
    fresh = [counter(f"new{i}") for i in range(7)]
    assert store.report("http", 3, fresh) == [
        "metric 'new6' would start a new series, and the store holds its limit of 7"
    ]


def test_set_counter_sets_a_total_read_off_elsewhere() -> None:
    store = MetricStore()
    assert store.report("http", 1, [counter("cpu_seconds_total", 9)]) == []
    store.set_counter("cpu_seconds_total", {}, 1.25, "CPU time.")
    store.set_counter("cpu_seconds_total", {}, 2, "CPU time.")  # set, not added
    store.inc("cpu_seconds_total", {}, 0.5)  # the same series
    assert store.render() == (
        "# HELP cpu_seconds_total CPU time.\n"
        "# TYPE cpu_seconds_total counter\n"
        "cpu_seconds_total 2.5\n"  # the worker's series went with the takeover
    )
    assert store.report("http", 1, [counter("cpu_seconds_total", 1)]) == [
        "metric 'cpu_seconds_total' is one of the master's own metrics"
    ]
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"counter 'cpu_seconds_total' cannot be {bad!r}"):
            store.set_counter("cpu_seconds_total", {}, bad, "")
    store.set_gauges("g", "", {})
    with pytest.raises(ValueError, match="counter 'g' collides with the master's gauge 'g'"):
        store.set_counter("g", {}, 1, "")


def test_the_masters_own_calls_raise_on_bad_arguments() -> None:
    store = MetricStore()
    store.inc("c", {})
    store.observe("h", {"broker": "x"}, 1, [1, 2])
    with pytest.raises(ValueError, match="counter 'c' cannot go up by -1"):
        store.inc("c", {}, -1)
    with pytest.raises(ValueError, match="bad metric name 'a b'"):
        store.inc("a b", {})
    with pytest.raises(ValueError, match="metric 'c' has a bad label name '__x'"):
        store.inc("c", {"__x": "1"})
    with pytest.raises(ValueError, match="reserved label name 'le'"):
        store.observe("h", {"le": "1"}, 1, [1])
    with pytest.raises(ValueError, match="histogram 'h' cannot observe nan"):
        store.observe("h", {}, math.nan, [1])
    with pytest.raises(ValueError, match="do not strictly increase"):
        store.observe("h", {}, 1, [2, 1])
    with pytest.raises(ValueError, match=r"histogram 'h' \{'broker': 'x'\} has buckets \[1.0, 2.0"):
        store.observe("h", {"broker": "x"}, 1, [1, 3])
    with pytest.raises(ValueError, match="gauge 'g' cannot be inf"):
        store.set_gauges("g", "", {(): math.inf})
    with pytest.raises(ValueError, match="gauge 'c' collides with the master's counter 'c'"):
        store.set_gauges("c", "", {})
    with pytest.raises(ValueError, match="collides with the master's histogram 'h'"):
        store.inc("h_count", {})


# -- hostile input, at random ------------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"-?[0-9]+(?:\.[0-9]+)?(?:e[+-][0-9]+)?"
SAMPLE_LINE = re.compile(rf"({NAME})(\{{{LABEL}(?:,{LABEL})*\}})? ({VALUE})")
HELP_LINE = re.compile(rf"# HELP ({NAME}) (?:[^\\\n]|\\[\\n])*")
TYPE_LINE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram)")
LE = re.compile(r',?le="([^"]*)"\}$')


def parse_exposition(text: str) -> int:
    """Check the exposition line by line; return how many series it shows. A histogram's
    buckets must be cumulative, the +Inf one last and equal to its _count."""
    assert text == "" or text.endswith("\n")
    kinds: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    family = ""
    series = 0
    buckets: dict[str | None, list[tuple[str, int]]] = {}
    for line in text.split("\n")[:-1]:
        if match := TYPE_LINE.fullmatch(line):
            family = match[1]
            assert family not in kinds, line
            kinds[family] = match[2]
            continue
        if match := HELP_LINE.fullmatch(line):
            assert match[1] not in kinds, line  # HELP comes before its TYPE
            continue
        match = SAMPLE_LINE.fullmatch(line)
        assert match, line
        name, labels, value = match.groups()
        assert math.isfinite(float(value))
        assert (name, labels) not in seen, line
        seen.add((name, labels))
        if kinds[family] == "histogram":
            assert name in (f"{family}_bucket", f"{family}_sum", f"{family}_count"), line
            if name.endswith("_bucket"):
                le = LE.search(labels)
                assert le, line
                assert le[1] == "+Inf" or math.isfinite(float(le[1])), line
                base = LE.sub("}", labels)
                seen_here = buckets.setdefault(None if base == "{}" else base, [])
                assert not seen_here or int(value) >= seen_here[-1][1], line
                seen_here.append((le[1], int(value)))
            elif name.endswith("_count"):
                series += 1
                assert buckets.pop(labels)[-1] == ("+Inf", int(value)), line
        else:
            assert name == family, line
            series += 1
    assert not buckets  # every histogram series ended with its _count
    return series


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(10**400)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", 'a"\\\n'])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def mostly(
    good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], odds: int = 8
) -> st.SearchStrategy[Any]:
    """``odds`` draws from ``good`` for one from ``bad``: with junk everywhere, every sample
    would be refused at its first check and the store would stay empty.

    The two are validated here, once: hypothesis 6.155 could fail inside itself
    (``'LazyStrategy' object has no attribute 'force_is_empty'``, then FlakyStrategyDefinition)
    when it worked out whether a strategy drawn from ``sampled_from`` was empty mid-draw."""
    good.validate()
    bad.validate()
    return st.integers(0, odds).flatmap(lambda pick: good if pick else bad)


names = mostly(
    st.sampled_from(["a", "a_total", "a_count", "a_sum", "a_bucket", "b:c"]),
    st.sampled_from(["x y", "__r", "", "a" * 201]) | json_values,
)
label_maps = st.dictionaries(
    mostly(st.sampled_from(["q", "path"]), st.sampled_from(["le", "broker", "__x", "a-b", ""])),
    mostly(st.text(st.sampled_from('ab\\"\n'), max_size=4), st.just("\udcff") | json_values),
    max_size=3,
)
good_numbers = st.integers(0, 5) | st.floats(-10, 1e3)
bad_numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.just(10**400)
    | st.just(-1)
    | st.none()
)


@st.composite
def samples(draw: st.DrawFn) -> object:
    """A sample that is right more often than not, and wrong in any one way."""
    kind = draw(mostly(st.sampled_from(["counter", "gauge", "histogram"]), json_values))
    bounds: list[float] = draw(st.sampled_from([[], [1.0], [1.0, 2.0], [0.5, 1.0, 10.0]]))
    whole = st.lists(st.integers(0, 3), min_size=len(bounds) + 1, max_size=len(bounds) + 1)
    sample = {
        "name": draw(names),
        "type": kind,
        "value": draw(mostly(good_numbers, bad_numbers)),
        "buckets": draw(mostly(st.just(bounds), st.lists(good_numbers | bad_numbers))),
        "counts": draw(mostly(whole, st.lists(good_numbers | bad_numbers, max_size=5))),
        "sum": draw(mostly(good_numbers, bad_numbers)),
        "labels": draw(mostly(label_maps, json_values)),
        "help": draw(mostly(st.text(st.sampled_from('h\\\n"'), max_size=4), json_values)),
    }
    for key in draw(mostly(st.just([]), st.lists(st.sampled_from(sorted(sample)), max_size=2))):
        sample.pop(key, None)
    return sample


steps = st.lists(
    st.tuples(
        st.sampled_from(["http", 'we"ird\\\n']),
        st.integers(0, 3),
        mostly(st.lists(mostly(samples(), json_values, 6), max_size=6), json_values, 4),
        st.sampled_from(["report", "forget", "inc", "observe", "set_gauges"]),
    ),
    max_size=12,
)


@pytest.mark.timeout(300)  # 15-25 s alone; a loaded machine took more than the default 60
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, max_series=st.integers(0, 12), max_bytes=st.integers(0, 3000))
def test_hostile_reports_never_raise_and_the_exposition_always_parses(
    steps: list[tuple[str, int, object, str]], max_series: int, max_bytes: int
) -> None:
    store = MetricStore(max_series=max_series, max_bytes=max_bytes)
    for broker, worker_id, metrics, also in steps:
        refusals = store.report(broker, worker_id, metrics)
        assert all(isinstance(r, str) and "\n" not in r for r in refusals)
        # The master's own calls, in between (they take names over from the workers).
        if also == "forget":
            store.forget(worker_id)
        elif also == "inc":
            store.inc("a_total", {"broker": broker})
        elif also == "observe":
            store.observe("a", {"broker": broker}, 0.5, [1.0])
        elif also == "set_gauges":
            store.set_gauges("b:c", "Master's.", {(("broker", broker),): worker_id})
    parse_exposition(store.render())
    # The workers' series never exceed the cap (the master's own are not counted), and the
    # count the cap is checked against is what the store really holds: a peek inside, since a
    # count that drifts (a takeover, a forget) would let the memory grow or refuse for nothing.
    assert store._series <= max_series
    counters = [f for f in store._counters.values() if not f.by_master]
    histograms = [f for f in store._histograms.values() if not f.by_master]
    gauges = [f for f in store._gauges.values() if not f.by_master]
    worker_series = (
        sum(len(f.series) for f in counters)
        + sum(len(f.series) for f in histograms)
        + sum(len(s.by_worker) for f in gauges for s in f.series.values())
    )
    assert worker_series == store._series
    # The same for the bytes a scrape prints of the workers' families: what the store charged
    # is what it holds, within its limit, and never less than what they print.
    charged = sum(f.size + sum(x.size for x in f.series.values()) for f in counters)
    charged += sum(f.size + sum(x.size for x in f.series.values()) for f in histograms)
    charged += sum(f.size + sum(x.size for x in f.series.values()) for f in gauges)
    assert charged == store._bytes <= max_bytes
    printed = pieces(
        _workers(store._counters), _workers(store._gauges), _workers(store._histograms)
    )
    assert len("".join(printed).encode()) <= store._bytes


def _workers(families: dict[str, Any]) -> dict[str, Any]:
    return {name: f for name, f in families.items() if not f.by_master}
