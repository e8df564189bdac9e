"""Complementary suppression (core.metrics.scorecard.complementary_suppression): hand-worked cases and
agreement with the plain one-group-at-a-time loop it replaces."""

import numpy as np
import pytest

from core.metrics.scorecard import complementary_suppression, is_small

NAN = float("nan")


@pytest.mark.parametrize("counts,groups,primary,expected", [
    # 4 is small; the smallest non-zero other part (25) goes too: 4 + 25 = 29 is not small.
    ([4, 25, 40, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]),
    # 3 + 4 = 7 would be revealed by subtraction, so a third part (30) goes too.
    ([3, 4, 30, 50], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]),
    # Zero parts are taken only when no non-zero part is left; the sum stays 5, so all go.
    ([5, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]),
    # A part without a first count (NaN) is never chosen.
    ([5, NAN, 20], [0, 0, 0], [1, 0, 0], [1, 0, 1]),
    # Ties go to the first row.
    ([5, 20, 20], [0, 0, 0], [1, 0, 0], [1, 1, 0]),
    # Groups are separate totals: group 1 has nothing left to add, group 2 has nothing small.
    ([2, 50, 60, 3, 4, 7, 80, 90], [0, 0, 0, 1, 1, 2, 2, 2], [1, 0, 0, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 0, 0, 0]),
    # Nothing small: nothing changes.
    ([20, 30], [0, 0], [0, 0], [0, 0]),
])
def test_hand_worked_cases(counts, groups, primary, expected):
    got = complementary_suppression(np.array(counts, dtype=float)[:, None], np.array(groups), np.array(primary, dtype=bool))
    assert got.astype(int).tolist() == expected


def test_every_count_column_counts():
    # Rows 0 and 1 are small in one column each; together they add up to 35 and 103: enough.
    counts = np.array([[5.0, 100.0], [30.0, 3.0], [40.0, 50.0]])
    assert complementary_suppression(counts, np.zeros(3, int), is_small(counts).any(axis=1)).tolist() == [True, True, False]
    # Two small parts whose second counts add up to 9: a third part must go.
    counts = np.array([[50.0, 4.0], [60.0, 5.0], [70.0, 80.0], [90.0, 95.0]])
    assert complementary_suppression(counts, np.zeros(4, int), is_small(counts).any(axis=1)).tolist() == [True, True, True, False]


def test_input_is_not_changed():
    primary = np.array([True, False, False])
    complementary_suppression(np.array([[4.0], [30.0], [40.0]]), np.zeros(3, int), primary)
    assert primary.tolist() == [True, False, False]


def _reference(counts, groups, hidden):
    """The rule as a plain loop, one group and one row at a time (the implementation it replaced)."""
    hidden = hidden.copy()
    for code in np.unique(groups[hidden]):
        pos = np.flatnonzero(groups == code)
        mask, part = hidden[pos].copy(), counts[pos]
        while mask.sum() < 2 or is_small(part[mask].sum(axis=0)).any():
            open_ = np.flatnonzero(~mask & ~np.isnan(part[:, 0]))
            if not len(open_):
                break
            nonzero = open_[part[open_, 0] > 0]
            pool = nonzero if len(nonzero) else open_
            mask[pool[np.argsort(part[pool, 0], kind="stable")[0]]] = True
        hidden[pos] = mask
    return hidden


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_the_one_group_at_a_time_loop(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 60)), int(rng.integers(1, 4))
    counts = rng.choice([0, 1, 2, 3, 5, 8, 10, 11, 12, 15, 40, 300], size=(n, k)).astype(float)
    counts[:, 0] += rng.choice([0.0, 0.25], size=n)  # member-years are not whole numbers
    counts[rng.random((n, k)) < 0.05] = NAN
    groups = rng.integers(-1, 8, size=n)  # -1: pandas' code for a missing group key
    primary = is_small(counts).any(axis=1) | (rng.random(n) < 0.05)
    assert complementary_suppression(counts, groups, primary).tolist() == _reference(counts, groups, primary).tolist()
