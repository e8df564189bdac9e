"""Care-team value scorecards: the core (no Streamlit here; see tests/unit/test_layering.py)."""
