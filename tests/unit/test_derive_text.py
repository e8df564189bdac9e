"""The one line the upload and override forms show after a derive (``core.derive.pipeline.derive_text``)."""

from core.derive.pipeline import derive_text


def test_a_month_derive_names_its_months_and_the_forward_looking_measures_of_the_months_before():
    summary = {"mode": "months", "from_month": "2026-11-01", "months": 1, "seconds": 51.26,
               "reach": {"from_month": "2026-10-01", "months": 1, "metrics": ["readmission_30d"]},
               "cells": {"rows": 22527, "reach_rows": 825}}  # fmt: skip
    assert derive_text(summary) == (
        "re-derived the 1 month(s) from Nov 2026 (22,527 cells), and the forward-looking measures (readmissions, "
        "first diagnoses, end of life) of the 1 month(s) before (825 cells) in 51.3 s"
    )
    alone = {**summary, "reach": {"from_month": "2026-11-01", "months": 0, "metrics": []}}
    assert derive_text(alone) == "re-derived the 1 month(s) from Nov 2026 (22,527 cells) in 51.3 s"
    assert derive_text({k: v for k, v in summary.items() if k != "reach"}) == derive_text(alone)


def test_other_derives():
    assert derive_text(None) == "nothing to re-derive"
    assert derive_text({"mode": "full", "why": "every month changed", "seconds": 3.04}) == (
        "re-derived the whole network (every month changed) in 3.0 s"
    )
