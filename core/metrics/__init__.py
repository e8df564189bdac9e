"""Figures from cells: scorecards with intervals and suppression (``scorecard``, ``stats``),
the value index (``value``), payment models with the ACO settlement (``payments``) and the cost
reports of a selection with their reconciliation (``cost_reports``)."""
