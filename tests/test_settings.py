"""Configuration: read once, wrong values name their variable, secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.settings import REFERENCE, Settings, SettingsError, reference_table


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)})
    assert (s.host, s.port, s.default_vendor) == ("127.0.0.1", 8000, "twilio")
    assert s.database_url == f"sqlite:///{tmp_path / 'connector.db'}"
    assert s.public_url == "http://127.0.0.1:8000"
    assert s.report_statuses == {"delivered", "failed"}
    assert s.dedupe_retention == 7 * 86400
    assert not s.allow_private_networks


def test_port_wins_over_connector_port() -> None:
    assert Settings.from_env({"PORT": "9000", "CONNECTOR_PORT": "8001"}).port == 9000
    assert Settings.from_env({"CONNECTOR_PORT": "8001"}).port == 8001


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("CONNECTOR_PORT", "eighty", id="port-text"),
    pytest.param("CONNECTOR_PORT", "70000", id="port-range"),
    pytest.param("CONNECTOR_ALLOW_PRIVATE_NETWORKS", "maybe", id="bool"),
    pytest.param("CONNECTOR_DEFAULT_VENDOR", "carrier-pigeon", id="vendor"),
    pytest.param("CONNECTOR_REPORT_STATUSES", "delivered,exploded", id="report-status"),
    pytest.param("CONNECTOR_AMBIGUOUS_POLICY", "sometimes", id="policy"),
    pytest.param("CONNECTOR_MAX_BODY_BYTES", "-1", id="negative"),
    pytest.param("CONNECTOR_PUBLIC_URL", "ftp://x", id="public-url"),
    pytest.param("CONNECTOR_PUBLIC_URL", "https://" + "c" * 33, id="public-url-too-long"),
    pytest.param("CONNECTOR_KEEP_MESSAGE_TEXT", "perhaps", id="keep-text"),
    pytest.param("CONNECTOR_DATABASE_URL", "mysql://x", id="database-url"),
    pytest.param("CONNECTOR_LOG_LEVEL", "loud", id="log-level"),
])
def test_wrong_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(name)):
        Settings.from_env({name: value})


def test_public_url_of_40_characters_is_the_longest_taken() -> None:
    assert Settings.from_env({"CONNECTOR_PUBLIC_URL": "https://" + "c" * 32}).public_url


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    s = Settings.from_env({"CONNECTOR_SECRET_KEY": "sk-very-secret" + "-" * 18,
                           "CONNECTOR_REPORT_SECRET": "rs-very-secret" + "-" * 18,
                           "CONNECTOR_PLATFORM_KEY": "pk-very-secret" + "-" * 18,
                           "CONNECTOR_ADMIN_KEY": "ak-very-secret"})
    shown = repr(s) + str(s) + repr(s.secret_key) + repr([s.report_secret, s.platform_key])
    assert "very-secret" not in shown
    assert s.secret_key == "sk-very-secret" + "-" * 18  # still usable


SECRETS = ["CONNECTOR_SECRET_KEY", "CONNECTOR_REPORT_SECRET", "CONNECTOR_PLATFORM_KEY"]


@pytest.mark.parametrize("name", SECRETS)
def test_short_secret_is_refused_naming_the_variable_not_the_value(name: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(name)) as caught:
        Settings.from_env({name: "weak-but-31-bytes-long-secret!!"})
    assert "weak" not in str(caught.value)
    # 32 bytes, not 32 characters: 16 two-byte characters are enough.
    assert Settings.from_env({name: "é" * 16}) is not None
    assert Settings.from_env({name: ""}) is not None  # unset: generated, or the check is off


def test_short_generated_secrets_stay_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("an-old-short-one")
    (tmp_path / "report_secret").write_text("another")
    s = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}).with_generated_secrets()
    assert (s.secret_key, s.report_secret) == ("an-old-short-one", "another")


def test_generated_secrets_persist_in_data_dir(tmp_path: Path) -> None:
    s = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)})
    first = s.with_generated_secrets()
    again = Settings.from_env({"CONNECTOR_DATA_DIR": str(tmp_path)}).with_generated_secrets()
    assert first.secret_key and first.secret_key == again.secret_key
    assert first.report_secret == again.report_secret != first.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_reference_documents_every_variable_read() -> None:
    source = Path(__file__).parents[1].joinpath("connector", "settings.py").read_text()
    read = set(re.findall(r'"((?:CONNECTOR_[A-Z_]+)|PORT)"', source))
    assert read == {s.name for s in REFERENCE}


def test_readme_configuration_table_is_current() -> None:
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    assert reference_table() in readme, (
        "README's configuration table is stale; regenerate it with "
        "python -c 'from connector.settings import reference_table; print(reference_table())'")


def test_rate_limits_parse_per_vendor_and_account() -> None:
    s = Settings.from_env({"CONNECTOR_RATE_LIMITS": "twilio=30, twilio:AC1=2.5,Sinch=10"})
    assert s.rate_limits == {"twilio": 30, "twilio:AC1": 2.5, "sinch": 10}


@pytest.mark.parametrize("value", ["twilio", "carrier=3", "twilio=0", "twilio=fast"])
def test_bad_rate_limits_name_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_RATE_LIMITS"):
        Settings.from_env({"CONNECTOR_RATE_LIMITS": value})


def test_redis_url_is_checked_and_its_password_never_shown() -> None:
    s = Settings.from_env({"CONNECTOR_REDIS_URL": "redis://:pw-very-secret@cache:6379/2"})
    assert s.redis_url == "redis://:pw-very-secret@cache:6379/2"
    assert "very-secret" not in repr(s) and "cache:6379/2" in repr(s)
    assert Settings.from_env({}).redis_url == ""
    with pytest.raises(SettingsError, match="CONNECTOR_REDIS_URL") as caught:
        Settings.from_env({"CONNECTOR_REDIS_URL": "cache:pw-very-secret@6379"})
    assert "very-secret" not in str(caught.value)


def test_validity_is_unset_by_default_else_positive_seconds() -> None:
    assert Settings.from_env({}).validity is None
    assert Settings.from_env({"CONNECTOR_VALIDITY": ""}).validity is None
    assert Settings.from_env({"CONNECTOR_VALIDITY": " 600 "}).validity == 600
    # Beyond a vendor's range is not an error: each adapter clamps it to its own.
    assert Settings.from_env({"CONNECTOR_VALIDITY": "9999999"}).validity == 9999999


@pytest.mark.parametrize("value", ["0", "-60", "1.5", "10m"])
def test_bad_validity_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CONNECTOR_VALIDITY"):
        Settings.from_env({"CONNECTOR_VALIDITY": value})
