"""The generated sample network end to end: generated, imported and derived (the session fixture
``sample_engine``), then checked against independent computations over the whole store."""

import pytest

from core.derive import costs
from tests.unit.test_costs import _cells_total


def test_sample_network_reconciles(sample_engine):
    """Every activity and claim cost of the network is either in the cost cells or in the
    documented unattributed remainder, to the cent."""
    rec = costs.reconcile_costs(sample_engine, None)
    assert rec.difference_usd == pytest.approx(0.0, abs=1e-6)
    assert rec.uncosted_internal_encounters == 0
    assert costs.has_cost_cells(sample_engine)
    in_cells = _cells_total(sample_engine, costs.COST_INTERNAL) + _cells_total(sample_engine, costs.COST_EXTERNAL)
    assert in_cells == pytest.approx(rec.attributed_internal_usd + rec.attributed_external_usd, rel=1e-9)
