"""``lab_result`` and ``observation`` -> measurements for the catalogue's LOINC codes."""

from pathlib import Path

import pandas as pd

from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.idmap import count_unmapped, make_id, person_id
from core.ingest.tuva.files import TuvaReader


def read_measurements(reader: TuvaReader, name: str, path: Path) -> None:
    """``lab_result`` or ``observation`` (``name``) -> measurement rows; results that are not a
    number and values outside the catalogue's plausible range are skipped with a count."""
    frame = reader.read(name, path)
    if frame is None:
        return
    file = path.name
    if name == "lab_result":
        frame, code = _lab_codes(frame)
        id_col = "lab_result_id"
    else:
        frame, code = _observation_codes(frame)
        id_col = "observation_id"
    label = "result_datetime" if name == "lab_result" else "observation_date"
    measured = reader.dates(file, frame, "_date_text", True, label)
    if not reader.report.ok:
        return
    frame = reader.known_persons(file, frame.assign(_code=code, _date=measured))
    codes = reader.catalog.codes
    unmapped = frame.loc[~frame["_code"].isin(codes.keys()), "_code"].value_counts()
    for c, n in unmapped.items():
        count_unmapped(reader.report, f"{name}:{c or 'no LOINC'}", int(n))
    _add_measurements(reader, name, frame[frame["_code"].isin(codes.keys())], id_col)


def _lab_codes(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The lab results with their date text (result, else collection) and the LOINC code of each:
    the normalized component or order code, else a source code whose type is LOINC."""
    date_text = frame.get("result_datetime", pd.Series("", index=frame.index)).str.strip()
    fallback = frame.get("collection_datetime", pd.Series("", index=frame.index))
    frame = frame.assign(_date_text=date_text.where(date_text != "", fallback))
    code = pd.Series("", index=frame.index)
    for col, type_col in (
        ("normalized_component_code", None),
        ("normalized_order_code", None),
        ("source_component_code", "source_component_type"),
        ("source_order_code", "source_order_type"),
    ):
        if col in frame:
            ok = frame[col].str.strip() != ""
            if type_col:
                ok &= frame.get(type_col, pd.Series("", index=frame.index)).str.strip().str.lower() == "loinc"
            code = code.where(code != "", frame[col].str.strip().where(ok, ""))
    return frame, code


def _observation_codes(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The observations with their date text and the LOINC code of each: the normalized code,
    else a source code whose type is LOINC."""
    frame = frame.assign(_date_text=frame["observation_date"])
    code = frame.get("normalized_code", pd.Series("", index=frame.index)).str.strip()
    src_ok = frame.get("source_code_type", pd.Series("", index=frame.index)).str.strip().str.lower() == "loinc"
    code = code.where(
        code != "", frame.get("source_code", pd.Series("", index=frame.index)).str.strip().where(src_ok, "")
    )
    return frame, code


def _add_measurements(reader: TuvaReader, name: str, frame: pd.DataFrame, id_col: str) -> None:
    """One measurement per row of a catalogue code: a number, or a tobacco answer through
    fhir_maps.toml [tobacco_text]."""
    codes = reader.catalog.codes
    tobacco = load_fhir_maps()["observations"]["tobacco"]
    no_value = out_of_range = 0
    units = [c for c in ("normalized_units", "source_units") if c in frame]
    records = frame[["_person", "_code", "_date", "result", id_col, *units]].to_dict("records")
    for r in records:
        text = r["result"].strip()
        if r["_code"] == tobacco:
            value = reader.tobacco_text.get(text.lower())
            if value is None:
                count_unmapped(reader.report, f"{name}.{tobacco}.result:{text}")
                continue
        else:
            try:
                value = float(text)
            except ValueError:
                no_value += 1
                continue
        spec = codes[r["_code"]]
        if not spec.min <= value <= spec.max:
            out_of_range += 1
            continue
        unit = r.get("normalized_units", "").strip() or r.get("source_units", "").strip() or spec.unit
        reader.rows["measurement"].append(
            dict(
                measurement_id=make_id(f"tuva:{'lab' if name == 'lab_result' else 'obs'}", r[id_col]),
                patient_id=person_id(r["_person"]),
                measured_date=r["_date"],
                code=r["_code"],
                value=float(value),
                value_text=text[:100] if r["_code"] == tobacco else "",
                unit=unit[:32],
            )
        )
    reader.report.add_skipped("measurement", f"{name}: result not a number", no_value)
    reader.report.add_skipped("measurement", f"{name}: value outside the catalogue's plausible range", out_of_range)

