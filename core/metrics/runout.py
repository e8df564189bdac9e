"""Claims run-out: how complete each month's claims are, and costs completed for it.

Settings are data (core/config/runout.toml). Two bases:

- **paid dates** (``Encounter.paid_date`` of claims): completion factors from the data's own lag,
  the completion-factor (lag-triangle) method of actuarial incurred-but-not-reported reserving:
  F(k) = share of dollars paid within k months of the service month, estimated from service
  months at least ``max_lag_months`` older than the extract (the latest paid month), so they
  have run out. A service month of age a (months before the extract) is F(a) complete; it is
  complete when F(a) >= ``complete_at``. Simplification: one pooled lag curve for every claim
  type and month (no seasonality, no development by category).
- **run-out setting** (no paid dates, or fewer than ``min_claims_with_paid_date``): the last
  ``months_without_paid_dates`` months ending with the latest claim's service month are
  incomplete, with no completion estimate.

Completed cost = claims paid / F(a) (only on the paid-dates basis, only where the user asks).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from core.config import ConfigError, config_path, load_toml
from core.store.models import Encounter
from core.store.months import as_month, index_of, month_start_sql
from core.store.queries import read_frame

RUNOUT_PATH = config_path("runout.toml")
PAID_DATES, RUNOUT_SETTING, NO_CLAIMS = "paid dates", "run-out setting", "no claims"


@dataclass(frozen=True)
class RunoutSettings:
    months_without_paid_dates: int = 3
    complete_at: float = 0.95
    max_lag_months: int = 12
    min_claims_with_paid_date: int = 50


@cache
def load_runout_settings(path: Path = RUNOUT_PATH) -> RunoutSettings:
    """Load and check core/config/runout.toml."""
    raw = load_toml(path).get("runout", {})
    unknown = set(raw) - set(RunoutSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{path}: unknown runout keys {sorted(unknown)}")
    out = RunoutSettings(**{k: type(getattr(RunoutSettings, k))(v) for k, v in raw.items()})
    if out.months_without_paid_dates < 0 or out.max_lag_months < 1 or out.min_claims_with_paid_date < 1:
        raise ConfigError(f"{path}: runout months and claim counts must be positive")
    if not 0 < out.complete_at <= 1:
        raise ConfigError(f"{path}: runout.complete_at must be in (0, 1]")
    return out


def claims_lags(engine: Engine) -> pd.DataFrame:
    """Claims (non-internal encounters) by service month and paid month: the derive's
    ``claims_lag_month`` (``core.derive.page_aggregates``), else summed in SQL from the encounters.

    Grain: service_month, paid_month (None: no paid date). Columns: claims, paid_usd.
    """
    from core.derive.page_aggregates import NO_PAID_DATE, built_in
    from core.store.models import ClaimsLagMonth

    if built_in(engine):  # the derive's claims_lag_month: a few hundred rows, not every claim of the network
        t = ClaimsLagMonth
        stmt = select(t.service_month, t.paid_month, t.claims, t.paid_usd).order_by(t.service_month, t.paid_month)
        frame = read_frame(engine, stmt)
        frame["paid_month"] = [None if as_month(m) == NO_PAID_DATE else m for m in frame["paid_month"]]
        return _lag_frame(frame)
    dialect = engine.dialect.name
    service = month_start_sql(dialect, Encounter.start_date).label("service_month")
    paid = month_start_sql(dialect, Encounter.paid_date).label("paid_month")
    stmt = (select(service, paid, func.count().label("claims"), func.coalesce(func.sum(Encounter.paid_usd), 0.0).label("paid_usd"))
            .where(Encounter.is_internal.is_(False)).group_by(service, paid))  # fmt: skip
    return _lag_frame(read_frame(engine, stmt))


def _lag_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame({"service_month": pd.Series([], dtype=object), "paid_month": pd.Series([], dtype=object),
                             "claims": pd.Series([], dtype="int64"), "paid_usd": pd.Series([], dtype="float64")})  # fmt: skip
    frame["service_month"] = [as_month(m) for m in frame["service_month"]]
    frame["paid_month"] = [None if m is None or pd.isna(m) else as_month(m) for m in frame["paid_month"]]
    return frame.astype({"claims": "int64", "paid_usd": "float64"})


def completion_factors(lags: pd.DataFrame, settings: RunoutSettings) -> pd.DataFrame:
    """Completion factor by lag from claims with a paid date.

    In: :func:`claims_lags`. Out grain: lag_months (0 .. max_lag_months). Column: completion
    (share of dollars paid within that many months of the service month; 1.0 at max_lag_months).
    Empty when fewer than ``min_claims_with_paid_date`` claims have a paid date.
    """
    paid = lags.loc[lags["paid_month"].notna()]
    if paid["claims"].sum() < settings.min_claims_with_paid_date:
        return pd.DataFrame({"lag_months": pd.Series([], dtype="int64"), "completion": pd.Series([], dtype="float64")})
    service = np.array([index_of(m) for m in paid["service_month"]])
    paid_at = np.array([index_of(m) for m in paid["paid_month"]])
    extract = paid_at.max()
    mature = (extract - service) >= settings.max_lag_months
    if not mature.any():  # no month has run out yet: every month, as far as it goes
        mature = np.ones(len(paid), dtype=bool)
    lag = np.clip(paid_at - service, 0, settings.max_lag_months)[mature]
    usd = paid["paid_usd"].to_numpy(dtype="float64")[mature]
    by_lag = np.bincount(lag, weights=usd, minlength=settings.max_lag_months + 1)
    total = by_lag.sum()
    cumulative = np.cumsum(by_lag) / total if total > 0 else np.ones_like(by_lag)
    cumulative[-1] = 1.0
    return pd.DataFrame({"lag_months": np.arange(settings.max_lag_months + 1), "completion": cumulative})


def month_completeness(lags: pd.DataFrame, months: Sequence[date], settings: RunoutSettings) -> pd.DataFrame:
    """How complete the claims of each of ``months`` are.

    Out grain: month. Columns: month, age_months (months between the month and the extract:
    the latest paid month, else the latest service month), completion (estimated share of what
    will be paid; NaN on the run-out-setting basis), complete (bool), basis (``paid dates``,
    ``run-out setting`` or ``no claims``).
    """
    months = [as_month(m) for m in months]
    out = pd.DataFrame({"month": months})
    if lags.empty or lags["claims"].sum() == 0:
        return out.assign(age_months=np.nan, completion=np.nan, complete=True, basis=NO_CLAIMS)
    factors = completion_factors(lags, settings)
    index = np.array([index_of(m) for m in months])
    if len(factors):
        extract = max(index_of(m) for m in lags["paid_month"].dropna())
        age = extract - index
        curve = factors["completion"].to_numpy()
        completion = np.where(age < 0, 0.0, curve[np.clip(age, 0, settings.max_lag_months)])
        return out.assign(age_months=age, completion=completion, complete=completion >= settings.complete_at - 1e-12, basis=PAID_DATES)
    latest = max(index_of(m) for m in lags["service_month"])
    age = latest - index
    return out.assign(age_months=age, completion=np.nan, complete=age >= settings.months_without_paid_dates, basis=RUNOUT_SETTING)


def claims_completeness(engine: Engine, months: Sequence[date], settings: RunoutSettings | None = None) -> pd.DataFrame:
    """:func:`month_completeness` of ``months`` from the store (one GROUP BY over the claims)."""
    return month_completeness(claims_lags(engine), tuple(months), settings or load_runout_settings())


def incomplete_note(completeness: pd.DataFrame, settings: RunoutSettings | None = None) -> str:
    """One line naming the incomplete months ('' when every month is complete)."""
    settings = settings or load_runout_settings()
    part = completeness.loc[~completeness["complete"].astype(bool)]
    if part.empty:
        return ""
    if (part["basis"] == PAID_DATES).all():
        months = ", ".join(f"{m:%Y-%m} ({c:.0%})" for m, c in zip(part["month"], part["completion"], strict=True))
        return f"claims incomplete (estimated share paid so far, from paid dates): {months}"
    months = ", ".join(f"{m:%Y-%m}" for m in part["month"])
    return f"claims incomplete (no paid dates; run-out of {settings.months_without_paid_dates} months): {months}"


def completed_usd(paid_usd: pd.Series, months: pd.Series, completeness: pd.DataFrame) -> pd.Series:
    """Claims paid completed for the run-out: paid / completion of the month where a completion
    factor is known and above 0 (paid-dates basis), else unchanged."""
    factor = pd.Series(completeness["completion"].to_numpy(), index=[as_month(m) for m in completeness["month"]])
    f = pd.Series([as_month(m) for m in months], index=months.index).map(factor).astype("float64")
    usable = f.notna() & (f > 0)
    return paid_usd.astype("float64").where(~usable, paid_usd.astype("float64") / f)
