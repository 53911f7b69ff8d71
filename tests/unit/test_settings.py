"""Settings: the real stack files validate, and each validation rule fails with a message naming the key."""

import pytest

from components.settings import SettingsError
from tests.unit.harness import run_program, settings_for


def test_dev_stack_file_is_small_and_cheap() -> None:
    s = settings_for("dev")
    assert (s.multi_az, s.replica_count, s.backup_retention_days, s.deletion_protection) == (
        False,
        0,
        7,
        False,
    )


def test_prod_stack_file_is_highly_available() -> None:
    s = settings_for("prod")
    assert (s.multi_az, s.replica_count, s.backup_retention_days) == (True, 1, 30)
    assert s.deletion_protection and s.protect


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"backupRetentionDays": 40}, "spike-land-db:backupRetentionDays = 40", "less than or equal to 35"),
        ({"backupRetentionDays": 0}, "spike-land-db:backupRetentionDays = 0", "greater than or equal to 1"),
        ({"allowedCidrs": ["0.0.0.0/0"]}, "spike-land-db:allowedCidrs", "whole internet"),
        ({"allowedCidrs": ["::/0"]}, "spike-land-db:allowedCidrs", "whole internet"),
        ({"instanceClass": "t3.micro"}, "spike-land-db:instanceClass = 't3.micro'", "db.<family>.<size>"),
    ],
)
def test_acceptance_rules_stop_before_any_resource(
    overrides: dict[str, object], key: str, fragment: str
) -> None:
    with pytest.raises(SettingsError) as err:
        run_program("dev", overrides)
    assert key in str(err.value)
    assert fragment in str(err.value)
