"""Seeded synthetic sample network (see sample_data.generator)."""
