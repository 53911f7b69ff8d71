"""Settings that shape the RDS instances: Database Insights mode and its retention."""

from __future__ import annotations

import pytest

from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import settings_for


def test_database_insights_default_is_standard_with_the_free_7_days() -> None:
    for stack in ("dev", "prod"):
        s = settings_for(stack)
        assert s.database_insights_mode == "standard"
        assert s.performance_insights_retention_days == 7


def test_advanced_database_insights_refuses_less_than_15_months_of_retention() -> None:
    with pytest.raises(SettingsError) as e:
        settings_for("prod", {"databaseInsightsMode": "advanced"})
    msg = str(e.value)
    assert "spike-land-db:performanceInsightsRetentionDays = 7 is invalid" in msg
    assert "465" in msg and "databaseInsightsMode standard" in msg
    assert "\n" not in msg


def test_unknown_database_insights_mode_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"spike-land-db:databaseInsightsMode = 'basic' is invalid"):
        settings_for("dev", {"databaseInsightsMode": "basic"})
