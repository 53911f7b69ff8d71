"""The policy pack directory, importable as `policy` so tests and mypy see `policy.validators`."""
