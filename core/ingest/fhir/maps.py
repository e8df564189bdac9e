"""The FHIR mapping tables (``core/config/fhir_maps.toml``) and the code systems the readers look for
(ICD-10-CM, SNOMED CT, LOINC, the US Core race and ethnicity extensions)."""

from functools import cache
from pathlib import Path

from core.config import config_path, load_toml
from core.config.catalog import load_catalog
from core.ingest.idmap import normalize_icd10

MAPS_PATH = config_path("fhir_maps.toml")
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10")
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"



@cache
def load_fhir_maps(path: Path = MAPS_PATH) -> dict:
    """The FHIR mapping tables, checked against the catalogue."""
    maps = load_toml(path)
    kinds = load_catalog().activity_kinds
    for table in ("encounter_classes", "encounter_types", "eob_types"):
        for code, kind in maps[table].items():
            if kind not in kinds:
                raise ValueError(f"{path}: [{table}] {code!r} maps to unknown activity kind {kind!r}")
    dispositions = load_catalog().dispositions
    for code, disposition in maps["discharge_dispositions"].items():
        if disposition not in dispositions:
            raise ValueError(f"{path}: [discharge_dispositions] {code!r} maps to unknown disposition {disposition!r}")
    for code, icd in maps["snomed_to_icd10"].items():
        if normalize_icd10(icd) != icd:
            raise ValueError(f"{path}: [snomed_to_icd10] {code!r} -> {icd!r} is not an ICD-10-CM code")
    return maps


