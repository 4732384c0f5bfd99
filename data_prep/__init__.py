"""Deterministic scripts that build datasets once and record how (`python -m data_prep.NAME --help`)."""
