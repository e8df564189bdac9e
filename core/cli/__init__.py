"""Command line (``python -m core``) and the benchmark."""
