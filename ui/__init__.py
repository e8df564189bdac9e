"""The thin Streamlit layer shared by dashboard.py and the pages: engine, cached queries, widgets.

Caching lives here and only here (DESIGN section 9): the core stays free of Streamlit.
"""
