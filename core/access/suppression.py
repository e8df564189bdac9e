"""Small counts by audience: which suppression policy applies to a figure (rules in core/config/suppression.toml).

One function decides, :func:`suppression_policy`, from the user's scope, the teams a figure is
made of and whether it is an export marked for sharing. Exact counts go to a user with
patient-level access to every one of those teams; suppression (counts of 1-10, the CMS cell-size
rule, with complementary suppression, see core/metrics/scorecard.py) goes to aggregate-only users,
to figures that mix in teams outside the user's patient-level scope, and to shared exports.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from core.access.policy import Scope
from core.config import ConfigError, config_path, load_toml

SUPPRESSION_PATH = config_path("suppression.toml")
AUDIENCES = ("patient_level_in_scope", "aggregate_only", "outside_scope", "shared_export")


@dataclass(frozen=True)
class SuppressionPolicy:
    """A policy: ``suppress`` counts of ``smallest``-``largest``; ``caption`` says so on the page;
    ``audience`` is why it applies (one of :data:`AUDIENCES`)."""

    policy_id: str
    suppress: bool
    caption: str
    audience: str = ""


@dataclass(frozen=True)
class SuppressionRules:
    smallest: int
    largest: int
    complementary: bool
    policies: dict[str, SuppressionPolicy]
    audiences: dict[str, str]
    window_rounding_base: int = 1  # controlled rounding of window numerators (1 = none), core.metrics.scorecard


@cache
def load_suppression_rules(path: Path = SUPPRESSION_PATH) -> SuppressionRules:
    """Load and check core/config/suppression.toml."""
    raw = load_toml(path)
    small = raw.get("small_counts", {})
    smallest, largest = int(small.get("smallest", 1)), int(small.get("largest", 10))
    if not 1 <= smallest <= largest:
        raise ConfigError(f"{path}: small_counts must have 1 <= smallest <= largest")
    policies = {pid: SuppressionPolicy(pid, bool(spec["suppress"]), str(spec["caption"]))
                for pid, spec in raw.get("policies", {}).items()}  # fmt: skip
    audiences = dict(raw.get("audiences", {}))
    if set(audiences) != set(AUDIENCES):
        raise ConfigError(f"{path}: [audiences] must name exactly {', '.join(AUDIENCES)}")
    unknown = set(audiences.values()) - set(policies)
    if unknown:
        raise ConfigError(f"{path}: [audiences] names unknown policies {sorted(unknown)}")
    base = small.get("window_rounding_base", 1)
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise ConfigError(f"{path}: small_counts.window_rounding_base must be a whole number >= 0 (0 or 1: no rounding)")
    return SuppressionRules(smallest, largest, bool(small.get("complementary", True)), policies, audiences, max(base, 1))


def suppression_policy(scope: Scope, figure_teams: Iterable[str] | None, shared_export: bool = False,
                       rules: SuppressionRules | None = None) -> SuppressionPolicy:  # fmt: skip
    """The policy for figures made of ``figure_teams`` (None = the whole network) shown to ``scope``.

    ``shared_export``: the figures are a download marked for sharing outside the care team.
    """
    rules = rules or load_suppression_rules()
    if shared_export:
        audience = "shared_export"
    elif not scope.patient_level:
        audience = "aggregate_only"
    elif (scope.network if figure_teams is None else set(figure_teams) <= set(scope.team_ids)):
        audience = "patient_level_in_scope"
    else:
        audience = "outside_scope"
    policy = rules.policies[rules.audiences[audience]]
    return SuppressionPolicy(policy.policy_id, policy.suppress, policy.caption, audience)
