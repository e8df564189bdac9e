"""Clinician: one patient (deep link ``?patient=ID``), within the user's scope only."""

import streamlit as st

from core.store import patient_record
from ui.auth import audit_view, require
from ui.data import query
from ui.labels import subgroup_labels

scope = require("patient")
patient_id = st.query_params.get("patient")
record = query(patient_record, patient_id, scope.team_ids) if patient_id else None
if record is None:
    st.title("Patient")
    st.info("Open a patient from the worklist. A patient outside your teams is not shown.")
    st.stop()
audit_view(scope, "view_patient", patient_id)

labels = subgroup_labels()
p = record["patient"]
st.title(f"{p['given_name']} {p['family_name']}")
st.caption(f"{p['patient_id']} · born {p['birth_date']} · {p['sex']} · {p['language']}"
           + (f" · died {p['death_date']}" if p["death_date"] else ""))  # fmt: skip

subgroups = record["subgroups"]
if not subgroups.empty:
    now = subgroups.iloc[-1]
    st.subheader(f"Subgroup: {labels.get(now['subgroup'], now['subgroup'])}")
    st.write(now["reason"])
tabs = st.tabs(["Subgroup history", "Conditions", "Encounters", "Measurements", "Medications"])
tabs[0].dataframe(subgroups[["month", "subgroup", "reason", "risk_score", "overridden"]], hide_index=True)
tabs[1].dataframe(record["conditions"].drop(columns=["patient_id"]), hide_index=True)
tabs[2].dataframe(record["encounters"].drop(columns=["patient_id"]), hide_index=True)
tabs[3].dataframe(record["measurements"].drop(columns=["patient_id"]), hide_index=True)
tabs[4].dataframe(record["medications"].drop(columns=["patient_id"]), hide_index=True)
