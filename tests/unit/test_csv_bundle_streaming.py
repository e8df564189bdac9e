"""The CSV bundle is read, checked and written in batches of rows: with batches of a few rows the
import finds the same problems at the same file rows as with one batch, a problem in a late batch
leaves nothing written, and the key hashes that carry checks across batches never decide alone."""

import numpy as np
import pyarrow as pa
import pytest

from core.ingest.bundle_schema import BY_FILE
from core.ingest.csv_bundle import import_bundle
from core.ingest.csv_bundle.keys import Keys, hash_text, key_hash
from core.ingest.csv_bundle.stream import Source, text_span
from tests.unit.test_csv_import import VALID, append_text, table_contents, table_counts, valid_tables, write_bundle

TINY = 512  # CSV bytes per batch: a few rows


def many_encounters(n: int = 120) -> dict[str, list[dict[str, str]]]:
    """The valid bundle with ``n`` more encounters of P1 (several batches at :data:`TINY`)."""
    tables = valid_tables()
    tables["encounters.csv"] += [
        {"encounter_id": f"EX{i}", "patient_id": "P1", "team_id": "T1", "kind": "phone_call", "start_date": "2024-01-15"}
        for i in range(n)
    ]
    tables["staff_minutes.csv"] += [{"encounter_id": f"EX{i}", "role": "physician", "minutes": "5"} for i in range(n)]
    return tables


def batch_count(folder, file: str, batch_bytes: int = TINY) -> int:
    spec = BY_FILE[file]
    start, end = text_span(folder / file)
    names = tuple(spec.column_names)
    return sum(1 for _ in Source(folder / file, spec, start, end, names).batches(batch_bytes))


def test_tiny_batches_load_what_one_batch_loads(engine, tmp_path):
    from core.store.db import create_schema, make_engine

    folder = write_bundle(tmp_path / "b", many_encounters())
    assert batch_count(folder, "encounters.csv") >= 5

    report = import_bundle(engine, folder, batch_bytes=TINY)
    whole = make_engine("sqlite://")
    create_schema(whole)
    reference = import_bundle(whole, folder)

    assert report.ok, report.to_text()
    assert report.loaded == reference.loaded and report.new_rows == reference.loaded
    assert report.loaded["encounter"] == len(VALID["encounters.csv"]) + 120
    assert table_contents(engine) == table_contents(whole)
    again = import_bundle(engine, folder, batch_bytes=TINY)
    assert again.ok and set(again.new_rows.values()) == {0}


@pytest.mark.parametrize(
    ("change", "file", "row", "column", "message"),
    [
        (lambda t: t["encounters.csv"][-1].update(start_date="2024-02-30"), "encounters.csv", 124, "start_date", "not a date"),
        (lambda t: t["encounters.csv"][-1].update(patient_id="P404"), "encounters.csv", 124, "patient_id", "no patients.csv row"),
        (lambda t: t["staff_minutes.csv"][-1].update(encounter_id="E404"), "staff_minutes.csv", 123, "encounter_id",
         "no encounters.csv row"),
        (lambda t: t["encounters.csv"][-1].update(end_date="2024-01-01"), "encounters.csv", 124, "end_date", "before start_date"),
        (lambda t: t["encounters.csv"].append(dict(t["encounters.csv"][3])), "encounters.csv", 125, "encounter_id",
         "duplicate key encounter_id='EX0' (first on row 5)"),
        (lambda t: t["staff_minutes.csv"].append(dict(t["staff_minutes.csv"][2])), "staff_minutes.csv", 124, "encounter_id,role",
         "duplicate key encounter_id='EX0', role='physician' (first on row 4)"),
    ],
    ids=["bad value", "dangling patient", "dangling encounter", "date order", "duplicate across batches", "duplicate compound key"],
)
def test_a_problem_in_a_late_batch_is_found_at_its_row_and_nothing_is_written(engine, tmp_path, change, file, row, column, message):
    assert import_bundle(engine, write_bundle(tmp_path / "first")).ok
    before = table_counts(engine), table_contents(engine)
    tables = many_encounters()
    change(tables)

    report = import_bundle(engine, write_bundle(tmp_path / "bad", tables), batch_bytes=TINY)

    assert not report.ok
    assert [(e.file, e.row, e.column) for e in report.errors if message in e.message] == [(file, row, column)], report.to_text()
    assert (table_counts(engine), table_contents(engine)) == before


def test_a_file_broken_in_a_late_batch_reports_only_why_it_cannot_be_read(engine, tmp_path):
    tables = many_encounters()
    tables["encounters.csv"][0]["start_date"] = "yesterday"  # in the first batch: replaced by the cause below
    folder = write_bundle(tmp_path / "b", tables)
    append_text("encounters.csv", "EY1,P1,T1,phone_call\n")(folder)

    report = import_bundle(engine, folder, batch_bytes=TINY)

    assert [(e.file, e.row) for e in report.errors] == [("encounters.csv", 125)], report.to_text()
    assert f"4 field(s), expected {len(BY_FILE['encounters.csv'].columns)}" in report.errors[0].message
    assert set(table_counts(engine).values()) == {0}


def test_bad_utf8_in_a_late_batch(engine, tmp_path):
    folder = write_bundle(tmp_path / "b", many_encounters())
    path = folder / "encounters.csv"
    path.write_bytes(path.read_bytes().replace(b"EX100,P1,T1", b"EX100,P1,T\xe9"))

    report = import_bundle(engine, folder, batch_bytes=TINY)

    assert [(e.file, e.row, e.column) for e in report.errors] == [("encounters.csv", 105, "team_id")], report.to_text()
    assert set(table_counts(engine).values()) == {0}


def test_warnings_are_summarised_once_per_file_across_batches(engine, tmp_path):
    tables = many_encounters()
    for row in tables["encounters.csv"][3:]:
        row.update(patient_id="P2", start_date="2024-03-20")  # P2 died on 2024-03-15

    report = import_bundle(engine, write_bundle(tmp_path / "b", tables), batch_bytes=TINY)

    assert report.ok, report.to_text()
    after_death = [w for w in report.warnings if "after the patient's death_date" in w.message]
    assert len(after_death) == 1
    assert (after_death[0].file, after_death[0].row) == ("encounters.csv", 5)
    assert "(120 rows: 5, 6, 7, 8, 9 and 115 more)" in after_death[0].message


def test_trailing_blank_lines_and_bom_with_tiny_batches(engine, tmp_path):
    folder = write_bundle(tmp_path / "b", many_encounters())
    path = folder / "encounters.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")

    report = import_bundle(engine, folder, batch_bytes=TINY)

    assert report.ok, report.to_text()
    assert report.loaded["encounter"] == len(VALID["encounters.csv"]) + 120


def test_hash_collisions_never_decide(engine, tmp_path, monkeypatch):
    """With every key hashing alike, duplicates and references are still decided on the values."""
    monkeypatch.setattr("core.ingest.csv_bundle.keys.hash_text", lambda values: np.zeros(len(values), dtype=np.uint64))
    tables = many_encounters()
    report = import_bundle(engine, write_bundle(tmp_path / "b", tables), batch_bytes=TINY)
    assert report.ok, report.to_text()

    tables["encounters.csv"].append(dict(tables["encounters.csv"][3], start_date="2024-01-16"))
    tables["medications.csv"][0]["patient_id"] = "P404"
    report = import_bundle(engine, write_bundle(tmp_path / "bad", tables), batch_bytes=TINY)
    where = {(e.file, e.row, e.column) for e in report.errors}
    assert where == {("encounters.csv", 125, "encounter_id"), ("medications.csv", 2, "patient_id")}, report.to_text()


@pytest.mark.parametrize(
    "values",
    [["", "a", "b", "ab", "ba", "a" * 8, "a" * 9, "é", "P0000001", "P0000002", "x" * 64], ["E1", "E2", "E10", "E100"]],
)
def test_hash_is_a_function_of_the_text_only(values):
    arr = pa.array(values * 2, type=pa.large_string())
    h = hash_text(arr)
    assert len(set(h[: len(values)].tolist())) == len(values)  # distinct texts, distinct hashes (here)
    assert (h[: len(values)] == h[len(values):]).all()
    assert (hash_text(arr.slice(len(values))) == h[: len(values)]).all()  # an Arrow slice hashes the same
    assert (hash_text(pa.chunked_array([arr.slice(0, 3), arr.slice(3)])) == h).all()


def test_compound_key_hash_depends_on_the_order_of_columns():
    a, b = pa.chunked_array([["x", "y"]]), pa.chunked_array([["y", "x"]])
    h = key_hash({"k1": a, "k2": b}, ("k1", "k2"))
    assert h[0] != h[1]


@pytest.mark.parametrize("keep_values", [True, False])
def test_keys_give_the_row_of_each_value(keep_values):
    ids = pa.array(["P3", "P1", "P2"], type=pa.large_string())
    keys = Keys(hash_text(ids), ids if keep_values else None, positions=True)
    lookup = pa.chunked_array([pa.array(["P1", "P9", "", "P3", "P2"], type=pa.large_string())])
    assert keys.positions(lookup).tolist() == [1, -1, -1, 0, 2]
    membership = Keys(hash_text(ids), None, positions=False)
    assert (membership.positions(lookup) >= 0).tolist() == [True, False, False, True, True]


NASTY_DAYS = ["0000-01-01", "0001-01-01", "9999-12-31", "2024-02-29", "2023-02-29", "2100-02-29", "2000-02-29", "2024-13-01",
              "2024-00-10", "2024-01-00", "2024-04-31", "2024-06-31", "2024/01/01", "2024-01-0a", "2024-1-01 ", "-024-01-01",
              "+024-01-01", "2024-01-31", "1969-12-31", "1900-03-01", "2024 01 01", "2024-01-3:", "", None]  # fmt: skip
NASTY_MONTHS = ["2024-00", "2024-13", "2024-1 ", "0000-01", "2024-12", "1970-01", "2024/01", "2024-0:", "", None]


def random_text(rng, n: int, width: int) -> list[str]:
    """Values of one width, mostly digits and dashes where a date has them, some other characters."""
    chars = np.array(list("0123456789-/ :a"))
    text = rng.choice(chars[:10], size=(n, width))
    text[:, 4] = "-"
    if width == 10:
        text[:, 7] = "-"
    noise = rng.random((n, width)) < 0.02
    text[noise] = rng.choice(chars, size=int(noise.sum()))
    return ["".join(row) for row in text]


@pytest.mark.parametrize(("fmt", "width", "nasty"), [("%Y-%m-%d", 10, NASTY_DAYS), ("%Y-%m", 7, NASTY_MONTHS)])
@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_dates_read_from_the_buffer_as_arrow_parses_them(fmt, width, nasty, text_type, monkeypatch):
    """The digit table of a clean column and Arrow's strptime with its checks agree on every value:
    real days, impossible ones, wrong shapes, empty and missing values."""
    from core.ingest.csv_bundle import columns

    rng = np.random.default_rng(7)
    days = [str(d) for d in rng.choice(np.arange("1890-01-01", "2031-01-01", dtype="datetime64[D]"), 3000)]
    values = nasty + random_text(rng, 20_000, width) + [d[:width] for d in days]
    rng.shuffle(values)
    column = pa.chunked_array([pa.array(values[:7000], text_type), pa.array(values[7000:], text_type)])
    expected, expected_valid = columns._parse_dates_by_arrow(column, fmt)
    assert expected_valid.sum() > 3000  # the days, and the random ones that happen to be real

    def no_arrow(*_):
        raise AssertionError("a clean column is read from its buffer")

    with monkeypatch.context() as m:
        m.setattr(columns, "_parse_dates_by_arrow", no_arrow)
        got, got_valid = columns._parse_dates(column, fmt)
        sliced, sliced_valid = columns._parse_dates(pa.array(values, text_type).slice(5), fmt)  # an offset into the buffers
    assert (got_valid == expected_valid).all() and (sliced_valid == expected_valid[5:]).all()
    assert (got.astype("int64") == expected.astype("int64")).all()  # NaT on the same rows too
    assert (sliced.astype("int64") == expected[5:].astype("int64")).all()
    # a missing value whose slot still holds a date's bytes (Arrow allows it) is missing
    whole = pa.array(["2024-01-01"[:width]] * 3, text_type)
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    holed = pa.Array.from_buffers(text_type, 3, [validity, *whole.buffers()[1:]], null_count=1)
    assert columns._parse_dates(pa.chunked_array([holed]), fmt)[1].tolist() == [True, False, True]
    # a column with a value of another width takes Arrow's path, with the same answers
    mixed = pa.chunked_array([pa.array(values + ["2024-1-5"], text_type)])
    got, got_valid = columns._parse_dates(mixed, fmt)
    assert not got_valid[-1] and (got_valid[:-1] == expected_valid).all()
