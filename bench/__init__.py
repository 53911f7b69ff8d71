"""Benchmarks that print figures (run them as scripts: `.venv/bin/python bench/<name>.py`)."""
