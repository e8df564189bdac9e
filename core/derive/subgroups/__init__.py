"""Needs-based subgroups: rules (data) -> monthly assignments with reasons, overrides, transitions.

After Porter, Pabo & Lee, "Redesigning primary care", Health Affairs 2013: every attributed
patient-month is assigned to the subgroup of the first rule that matches, and every assignment
carries its reason. The modules, in the order the data goes through them:

- ``rules``: the rules file (``core/config/subgroup_rules.toml``) parsed and checked into a ``RuleSet``.
- ``inputs``: what the rules can use, one row per patient-month (age, condition groups, risk
  factors, frailty, utilisation, risk score), with their definitions.
- ``evaluate``: the first matching rule of each patient-month and its reason; month thresholds
  of the top-fraction rules.
- ``overrides``: pinning a patient to a subgroup and lifting it (audited), applied over the rules.
- ``frames`` and ``assign``: ``assign_subgroups`` reads the store block by block, runs the steps
  above and replaces the stored assignments in one transaction.
- ``transitions``: subgroup moves between months and the mix of a month, for the pages.
"""
