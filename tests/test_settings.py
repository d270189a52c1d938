"""Settings: one table in the code, the same table in the README, typed parsing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from watchlog.core.settings import SETTINGS_DOC, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_every_field_has_a_documented_variable() -> None:
    documented = {name for name, _, _ in SETTINGS_DOC}
    fields = {"WATCHLOG_" + f.name.upper() for f in dataclasses.fields(Settings)}
    assert fields == documented


def test_settings_defaults_match_the_table() -> None:
    s = Settings.from_env({})
    assert s == Settings()


def test_settings_readme_lists_every_variable_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, default, _ in SETTINGS_DOC:
        row = re.search(rf"^\| `{name}` \| ?(`[^`]*`)? ?\|", readme, re.M)
        assert row, f"{name} missing from the README's settings table"
        assert (row.group(1) or "``") == f"`{default}`", name


def test_settings_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert Settings.from_env({"WATCHLOG_REDIS_PASSWORD_FILE": str(secret)}).redis_password == \
        "s3cret"


def test_settings_reject_a_non_number_with_its_name() -> None:
    with pytest.raises(ValueError, match="WATCHLOG_MAX_BATCH"):
        Settings.from_env({"WATCHLOG_MAX_BATCH": "lots"})


@pytest.mark.parametrize("env", [{"WATCHLOG_WAIT_REPLICAS": "one"},
                                 {"WATCHLOG_WAIT_TIMEOUT_MS": "2000"}])
def test_settings_reject_replica_waits_that_cannot_work(env: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(env))):
        Settings.from_env(env)
