"""``lab_result`` and ``observation`` -> measurements for the catalogue's LOINC codes; ``procedure`` and
``immunization`` -> procedure rows."""

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



TUVA_CODE_TYPES = {"hcpcs": "HCPCS", "cpt": "HCPCS", "cvx": "CVX", "snomed-ct": "SNOMED", "snomed": "SNOMED",
                   "loinc": "LOINC", "icd-10-pcs": "ICD10PCS"}


def read_procedures(reader: TuvaReader, name: str, path: Path) -> None:
    """``procedure`` or ``immunization`` (``name``) -> procedure rows: the normalized code and type,
    else the source ones; rows without a code are counted as unmapped."""
    frame = reader.read(name, path)
    if frame is None:
        return
    file = path.name
    if name == "procedure":
        date_col = "procedure_date"
    else:
        date_col = next((c for c in reader.maps["procedures"]["immunization_date_columns"] if c in frame), None)
        if date_col is None:
            listed = ", ".join(reader.maps["procedures"]["immunization_date_columns"])
            reader.report.add_error(file, 1, listed, f"missing a date column (one of: {listed})")
            return
    done = reader.dates(file, frame, date_col, True)
    if not reader.report.ok:
        return
    blank = pd.Series("", index=frame.index)
    code, kind = blank, blank
    for code_col, type_col in (("normalized_code", "normalized_code_type"), ("source_code", "source_code_type")):
        if code_col in frame:
            take = (code == "") & (frame[code_col].str.strip() != "")
            code = code.where(~take, frame[code_col].str.strip())
            kind = kind.where(~take, frame.get(type_col, blank).str.strip().str.lower())
    frame = reader.known_persons(file, frame.assign(_date=done, _code=code, _type=kind))
    missing = frame["_code"] == ""
    if missing.any():
        count_unmapped(reader.report, f"{name}:no code", int(missing.sum()))
    id_col = f"{name}_id"
    for rid, person, on, c, t in zip(frame.loc[~missing, id_col], frame.loc[~missing, "_person"], frame.loc[~missing, "_date"],
                                     frame.loc[~missing, "_code"], frame.loc[~missing, "_type"], strict=True):
        reader.rows["procedure"].append(dict(procedure_id=make_id(f"tuva:{name}", rid), patient_id=person_id(person),
                                             performed_date=on, code=c[:32], code_system=TUVA_CODE_TYPES.get(t, t.upper())[:32],
                                             description=""))
