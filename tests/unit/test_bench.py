"""The benchmark's own arithmetic (core/cli/bench.py). The benchmark run end to end on a small
network is in tests/e2e/test_bench.py."""

from core.cli.bench import percentiles


def test_percentiles_nearest_rank():
    assert percentiles([0.001 * i for i in range(1, 21)]) == {"p50_ms": 10.5, "p95_ms": 19.0, "reps": 20}
