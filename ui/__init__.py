"""The thin Streamlit layer shared by dashboard.py and the pages: engine, cached queries, widgets.

Caching lives here and only here: the core stays free of Streamlit.
"""
