"""Figures from cells: scorecards with intervals and suppression (``scorecard``, ``stats``),
the value index (``value``) and payment models with the ACO settlement (``payments``)."""
