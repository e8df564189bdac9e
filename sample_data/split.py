"""Split a CSV bundle by date: the rows before a month, and the rows of that month on.

For the "one new month" benchmark and test of the incremental derive (issue 21): a network of
N months is split into the bundle of its first N-1 months and the bundle of its last month, as a
monthly feed would send them. Rows go by their date (attribution month, encounter start,
measurement date, condition onset, medication start, procedure date; staff minutes with their
encounter). Practices, teams and staff go in both. Patients go in each bundle that refers to
them; in the earlier bundle a death from the cut month on is not known yet (blank), and the
later bundle sends those patients again with it. Simplification: an end date after the cut
(a stay's discharge, a resolved condition, a stopped medicine) is sent with the earlier row, as
if the feed had known it.

``python -m sample_data.split BUNDLE CUT_MONTH BEFORE AFTER`` (CUT_MONTH as ``2026-11``).
"""

import shutil
import sys
from pathlib import Path

import pandas as pd

DATE_COLUMNS = {
    "attribution.csv": "month",
    "conditions.csv": "onset_date",
    "encounters.csv": "start_date",
    "measurements.csv": "measured_date",
    "medications.csv": "start_date",
    "procedures.csv": "performed_date",
}
BOTH = ("practices.csv", "teams.csv", "staff.csv", "manifest.json")


def split_bundle(bundle: Path, cut_month: str, before: Path, after: Path) -> dict[str, tuple[int, int]]:
    """Write the rows of ``bundle`` dated before ``cut_month`` (``YYYY-MM``) to ``before`` and the
    others to ``after``. Returns {file: (rows before, rows after)}."""
    bundle, before, after = Path(bundle), Path(before), Path(after)
    before.mkdir(parents=True, exist_ok=True)
    after.mkdir(parents=True, exist_ok=True)
    counts: dict[str, tuple[int, int]] = {}
    people: tuple[set, set] = (set(), set())
    early_encounters: set = set()
    for name, column in DATE_COLUMNS.items():
        if not (bundle / name).exists():
            continue
        frame = pd.read_csv(bundle / name, dtype=str, keep_default_na=False)
        late = frame[column].str.slice(0, 7) >= cut_month
        frame[~late].to_csv(before / name, index=False)
        frame[late].to_csv(after / name, index=False)
        people[0].update(frame.loc[~late, "patient_id"])
        people[1].update(frame.loc[late, "patient_id"])
        if name == "encounters.csv":
            early_encounters = set(frame.loc[~late, "encounter_id"])
        counts[name] = (int((~late).sum()), int(late.sum()))
    if (bundle / "staff_minutes.csv").exists():
        minutes = pd.read_csv(bundle / "staff_minutes.csv", dtype=str, keep_default_na=False)
        early = minutes["encounter_id"].isin(early_encounters)
        minutes[early].to_csv(before / "staff_minutes.csv", index=False)
        minutes[~early].to_csv(after / "staff_minutes.csv", index=False)
        counts["staff_minutes.csv"] = (int(early.sum()), int((~early).sum()))
    patients = pd.read_csv(bundle / "patients.csv", dtype=str, keep_default_na=False)
    died_late = patients["death_date"].str.slice(0, 7) >= cut_month
    first = patients[patients["patient_id"].isin(people[0])].copy()
    first.loc[died_late, "death_date"] = ""
    second = patients[patients["patient_id"].isin(people[1]) | (died_late & (patients["death_date"] != ""))]
    first.to_csv(before / "patients.csv", index=False)
    second.to_csv(after / "patients.csv", index=False)
    counts["patients.csv"] = (len(first), len(second))
    for name in BOTH:
        if (bundle / name).exists():
            shutil.copy(bundle / name, before / name)
            shutil.copy(bundle / name, after / name)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    for file, (n_before, n_after) in split_bundle(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])).items():
        print(f"{file:20} {n_before:>12,} {n_after:>10,}")
