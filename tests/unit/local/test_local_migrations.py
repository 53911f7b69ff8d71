"""What `dbctl local status` and `up` advise about migrations (issue 25, items 2 and 3)."""

from __future__ import annotations

import inspect

from dbctl.local import migrations as local_migrations
from dbctl.schema import deploy, migrate


def test_the_runner_still_advises_the_command_local_advice_rewrites() -> None:
    """local_advice swaps the runner's `dbctl migrate resolve` (which needs an admin URL) for the local
    stack's own; if the runner's wording changed, the swap would silently stop."""
    source = inspect.getsource(migrate)
    assert source.count(local_migrations.MIGRATE_RESOLVE) >= 3
    message = f"migration x failed: boom. Fix it, then run: {local_migrations.MIGRATE_RESOLVE} x"
    assert local_migrations.local_advice(message).endswith("run: dbctl local resolve --rolled-back x")


def test_status_names_the_command_that_fixes_each_state() -> None:
    verdict = local_migrations._verdict
    assert verdict(deploy.Report()) == "up to date; "
    pending = deploy.Report(pending=["20991231000000_x"], changed=True)
    drift = deploy.Report(role_changes=["reset attributes of spike_app_a"], changed=True)
    for report in (pending, drift):
        assert "run `dbctl local up`: it applies pending migrations and repairs role drift" in verdict(report)
    failed = deploy.Report(failed=[{"name": "20991231000000_x", "log": "boom"}], pending=["y"], changed=True)
    assert "`dbctl local resolve --rolled-back 20991231000000_x` and `dbctl local up`" in verdict(failed)
    changed_file = deploy.Report(problems=["migration y changed after it was applied"], changed=True)
    assert "cannot repair" in verdict(changed_file)
