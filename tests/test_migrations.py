"""The migrations create every column the models declare.

The request log's columns are derived from `telemetry.schema`: a field given a column there
needs a migration too, or every export to the table fails (and what reads the table, such as
the budgets rebuild, finds nothing).
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_models_need_no_migration_the_apps_do_not_have():
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:
        pytest.fail(f"the models and the migrations disagree:\n{out.getvalue()}")
