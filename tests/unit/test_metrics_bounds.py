"""What one scrape can cost the master: the workers' series are charged the bytes their lines
take at their widest, new series are refused past ``max_bytes`` or past ``MAX_LABEL_TEXT``
bytes of labels, and the exposition is made in pieces, one at a time. (500 histogram series
inside the old caps made a 147 MB scrape; 10,000 about 2.9 GB.)"""

from __future__ import annotations

import sys

from test_metrics import counter, gauge, histogram

from prefork.ops import _metrics_text as fmt
from prefork.ops._metrics import MAX_BYTES, MetricStore

WIDEST_BOUNDS = [-sys.float_info.max * (0.5**i) for i in range(fmt.MAX_BUCKETS)]


def widest_labels(size: int) -> dict[str, str]:
    """Labels that print as close to ``size`` bytes as they can (the ``broker`` label
    included): values of quotes, which escape to two bytes each, MAX_TEXT of them at most."""
    labels: dict[str, str] = {}

    def printed(labels: dict[str, str]) -> int:
        return len(fmt.label_text(tuple(sorted([*labels.items(), ("broker", "w")]))).encode())

    while True:
        name = f"l{len(labels):02d}"
        labels[name] = ""
        if printed(labels) > size:
            del labels[name]
            return labels
        while (
            len(labels[name]) < fmt.MAX_TEXT
            and printed(grown := {**labels, name: labels[name] + '"'}) <= size
        ):
            labels = grown
        if len(labels[name]) < fmt.MAX_TEXT:
            return labels


def charged(store: MetricStore) -> int:
    return store._bytes


def test_each_kind_is_charged_no_less_than_it_prints_at_its_widest() -> None:
    labels = widest_labels(fmt.MAX_LABEL_TEXT)
    name = "n" * fmt.MAX_TEXT
    for sample in [
        counter(name, sys.float_info.max, labels=labels),
        gauge(name, -MetricStore()._gauge_limit, labels=labels),
        histogram(name, [2**53] * 33, -sys.float_info.max, WIDEST_BOUNDS, labels=labels),
    ]:
        store = MetricStore()
        sample["help"] = '\\\n"' * 66 + "\\"
        assert store.report("w", 1, [sample]) == []
        if sample["type"] == "histogram":  # its counts as high as they go: 19 digits
            refused: list[str] = []
            while not refused:
                refused = store.report("w", 1, [{**sample, "sum": 0.0}])
            assert refused == [f"metric {name[:60]!r}... would overflow its count"]
            (series,) = store._histograms[name].series.values()
            assert len(str(sum(series.counts))) == 19
        printed = len(store.render().encode())
        # Charged no less than printed, and not much more: only the numbers' widest forms.
        assert printed <= charged(store) <= printed + 40 * 35, sample["type"]


def test_labels_past_the_per_series_limit_are_refused() -> None:
    store = MetricStore()
    labels = widest_labels(fmt.MAX_LABEL_TEXT)
    assert store.report("w", 1, [counter(labels=labels)]) == []
    longer = {**labels, "zz": "x"}
    assert store.report("w", 1, [counter(labels=longer)]) == [
        "metric 'jobs_total' has labels of more than 1024 bytes as printed"
    ]


def test_the_cardinality_attack_costs_nothing() -> None:
    """10,000 histogram series with 16 labels of 190-character names and 150 quotes each
    (inside every old cap): each is refused, and the scrape stays empty."""
    store = MetricStore()
    bounds = [0.001 * 2**i for i in range(31)]
    for start in range(0, 10_000, 100):
        batch = [
            histogram(
                "evil_seconds",
                [1] + [0] * 31,
                0.001,
                bounds,
                labels={f"l{j}_" + "x" * 190: '"' * 150 + f"v{i:07d}" for j in range(16)},
            )
            for i in range(start, start + 100)
        ]
        refused = store.report("w", 1, batch)
        assert len(refused) == 100
        assert set(refused) == {
            "metric 'evil_seconds' has labels of more than 1024 bytes as printed"
        }
    assert store.render() == "" and charged(store) == 0


def test_a_store_full_in_bytes_refuses_new_series_and_keeps_counting_old_ones() -> None:
    store = MetricStore(max_bytes=2000)
    assert store.report("w", 1, [gauge("g", 1, labels={"k": "a" * 200})]) == []
    refused: list[str] = []
    i = 0
    while not refused:
        i += 1
        refused = store.report("w", 1, [counter(f"c{i}_total", labels={"k": "v" * 200})])
    assert refused == [f"metric 'c{i}_total' would take a scrape past its limit of 2000 bytes"]
    assert len(store.render().encode()) <= charged(store) <= 2000
    assert store.report("w", 1, [counter("c1_total", 5, labels={"k": "v" * 200})]) == []
    # A gauge leaving with its worker frees what it was charged.
    before = charged(store)
    store.forget(1)
    assert charged(store) < before
    assert store.report("w", 2, [counter(f"c{i}_total", labels={"k": "v" * 200})]) == []


def test_a_help_that_would_pass_the_limit_is_left_out() -> None:
    store = MetricStore(max_bytes=200)
    assert store.report("w", 1, [counter("a_total")]) == []
    left = 200 - charged(store)
    assert store.report("w", 1, [counter("a_total", help="h" * left)]) == []
    assert "# HELP" not in store.render()
    assert store.report("w", 1, [counter("a_total", help="h" * (left - 30))]) == []
    assert "# HELP a_total " + "h" * (left - 30) + "\n" in store.render()
    assert charged(store) <= 200


def test_the_master_taking_a_name_over_frees_its_bytes() -> None:
    store = MetricStore()
    store.report("w", 1, [counter("a_total"), histogram("h"), gauge("g")])
    assert charged(store) > 0
    store.inc("a_total", {})
    store.observe("h", {}, 1.0, [1.0])
    store.set_gauges("g", "", {(): 1.0})
    assert charged(store) == 0


def test_the_exposition_is_made_in_pieces_that_join_to_the_whole() -> None:
    store = MetricStore()
    store.report("w", 1, [counter(f"c{i:03d}_total", i) for i in range(300)])
    store.report("w", 1, [histogram("h", labels={"i": str(i)}) for i in range(30)])
    store.inc("prefork_x_total", {"broker": "w"})
    made = list(store.pieces(size=1000))
    assert len(made) > 10 and all(piece.endswith("\n") for piece in made)
    assert all(len(piece) < 1000 + 200 for piece in made)
    assert "".join(made) == store.render()
    assert MAX_BYTES == 16 << 20


def test_what_goes_between_two_pieces_is_left_out() -> None:
    """Gauges whose worker left, and a family the master took over, after the first piece was
    made: what is gone is not printed, the rest is."""
    store = MetricStore()
    store.report("w", 1, [gauge("a_gauge", 1, labels={"k": str(k)}) for k in range(9)])
    store.report("w", 2, [gauge("a_gauge", 1, labels={"k": "x"})])
    store.report("w", 1, [counter(f"b{i:03d}_total") for i in range(100)])
    store.report("w", 2, [gauge("m_gauge"), gauge("n_gauge", 1, labels={"k": "2"})])
    store.report("w", 1, [gauge("n_gauge", 1, labels={"k": "1"}), histogram("z_seconds")])
    made = store.pieces(size=100)
    first = next(made)  # half-way through a_gauge
    store.forget(2)  # a_gauge{k="x"} goes, m_gauge whole, and n_gauge{k="2"}
    store.observe("z_seconds", {}, 0.5, [1.0])  # the workers' z_seconds is dropped
    rest = "".join(made)
    assert first.startswith('# TYPE a_gauge gauge\na_gauge{broker="w",k="0"} 1\n')
    assert 'k="8"' in rest and 'k="x"' not in rest
    assert "m_gauge" not in rest
    assert 'n_gauge{broker="w",k="1"} 1\n' in rest and 'k="2"' not in rest
    assert 'z_seconds_count{broker="w"}' not in rest and "z_seconds_count 1\n" in rest
