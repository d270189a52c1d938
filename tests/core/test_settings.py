"""Settings: one table in the code, the same table in the README, typed parsing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from helpers import ROOT
from watchlog.core.settings import SETTINGS_DOC, Settings


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


def readme_settings_table(readme: str) -> str:
    start = readme.index("| variable | default | meaning |\n")
    end = readme.index("\n\n", start)
    return readme[start:end + 1]


@pytest.mark.parametrize("drift", [False, True], ids=["readme", "drifted-copy"])
def test_settings_readme_table_is_generated_from_the_fields(drift: bool) -> None:
    """The README's table is exactly ``readme_table()`` (the fields' defaults and meanings).
    Negative control: a copy whose one default drifted from the code is told apart."""
    from watchlog.core.settings import readme_table

    readme = (ROOT / "README.md").read_text()
    if drift:
        readme = readme.replace("| `WATCHLOG_MAX_BATCH` | `1000` |",
                                "| `WATCHLOG_MAX_BATCH` | `500` |")
    assert (readme_settings_table(readme) == readme_table()) is not drift


@pytest.mark.parametrize(("env", "field", "value"), [
    ({"WATCHLOG_WAIT_REPLICAS": "1"}, "wait_replicas", 1),
    ({"WATCHLOG_WAIT_REPLICAS": "auto"}, "wait_replicas", "auto"),
    ({"WATCHLOG_FAULT_RETRY_AFTER": "2"}, "fault_retry_after", 2),
    ({"WATCHLOG_FAULT_RETRY_AFTER": ""}, "fault_retry_after", None),
    ({"WATCHLOG_FAULT_ABORT_STATUS": "503"}, "fault_abort_status", 503),
    ({"WATCHLOG_SERVER": "gunicorn"}, "server", "gunicorn"),
    ({"WATCHLOG_AUTH": "OFF"}, "auth", "off"),
    ({"WATCHLOG_AUTH": "disabled"}, "auth", "on"),  # only an explicit off opens the APIs
])
def test_settings_are_parsed_into_their_types_at_load(env: dict, field: str, value: object
                                                      ) -> None:
    got = getattr(Settings.from_env(env), field)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("env", [{"WATCHLOG_SERVER": "uwsgi"},
                                 {"WATCHLOG_FAULT_ABORT_STATUS": "418"},
                                 {"WATCHLOG_FAULT_ABORT_PHASE": "during"},
                                 {"WATCHLOG_FAULT_RETRY_AFTER": "soon"},
                                 {"WATCHLOG_WAIT_REPLICAS": "-1"}])
def test_settings_refuse_a_value_outside_their_type_by_name(env: dict) -> None:
    from watchlog.core.errors import InvalidSetting

    with pytest.raises(InvalidSetting, match=next(iter(env))):
        Settings.from_env(env)
