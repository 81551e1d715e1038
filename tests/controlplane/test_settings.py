"""Settings.from_env: defaults, one ConfigError per bad variable, masking, immutability."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controlplane.errors import ConfigError
from controlplane.settings import Secret, Settings

SECRET_KEY = "a-secret-key-of-plenty-characters"
WEBHOOK_SECRET = "webhook-secret-never-shown"
DB_PASSWORD = "db-password-never-shown"
REDIS_PASSWORD = "redis-password-never-shown"
TOKEN = "ps_abcdef012345_token-never-shown"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAprivate-key-body\n"
    "-----END RSA PRIVATE KEY-----\n"
)


def test_defaults_use_an_sqlite_file_under_the_data_dir_and_local_redis(tmp_path: Path) -> None:
    settings = Settings.from_env({"PORTSIDE_DATA_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{tmp_path / 'portside.sqlite3'}"
    assert settings.is_sqlite
    assert settings.data_dir == tmp_path
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.github_app_id is None
    assert settings.github_webhook_secret == ""
    assert settings.github_api_url == "https://api.github.com"
    # Building settings reads and connects nothing: the SQLite file is not created yet.
    assert list(tmp_path.iterdir()) == []


def test_variables_are_read_and_blank_ones_ignored(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PORTSIDE_DATA_DIR": str(tmp_path),
            "PORTSIDE_REDIS_URL": "redis://redis.internal:6380/2",
            "PORTSIDE_AGENT_INTERVAL": " 30 ",
            "PORTSIDE_LOG_KEEPALIVE": "5",
            "PORTSIDE_GITHUB_API_URL": "https://ghe.example.com/api/v3/",
            "PORTSIDE_PREVIEW_DOMAIN": "",
            "UNRELATED": "ignored",
        }
    )

    assert settings.redis_url == "redis://redis.internal:6380/2"
    assert settings.agent_interval == 30
    assert settings.log_keepalive == 5
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.preview_domain == ""


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"PORTSIDE_AGENT_INTERVAL": "abc"}, "PORTSIDE_AGENT_INTERVAL"),
        ({"PORTSIDE_AGENT_INTERVAL": "0"}, "PORTSIDE_AGENT_INTERVAL"),
        ({"PORTSIDE_REDIS_URL": "http://x"}, "PORTSIDE_REDIS_URL"),
        ({"PORTSIDE_DATABASE_URL": "mysql://x"}, "PORTSIDE_DATABASE_URL"),
        ({"PORTSIDE_GITHUB_APP_ID": "12345"}, "PORTSIDE_GITHUB_APP_ID"),
        ({"PORTSIDE_GITHUB_APP_ID": "twelve"}, "PORTSIDE_GITHUB_APP_ID"),
        ({"PORTSIDE_SECRET_KEY": "too-short"}, "PORTSIDE_SECRET_KEY"),
        ({"PORTSIDE_GITHUB_PRIVATE_KEY": "not a key"}, "PORTSIDE_GITHUB_PRIVATE_KEY"),
        ({"PORTSIDE_URL": "ftp://portside.example.com"}, "PORTSIDE_URL"),
        ({"PORTSIDE_REGISTRY": "https://registry.example.com"}, "PORTSIDE_REGISTRY"),
        ({"PORTSIDE_LOG_KEEPALIVE": "31"}, "PORTSIDE_LOG_KEEPALIVE"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value.values())),
)
def test_a_bad_value_raises_config_error_naming_the_variable(
    tmp_path: Path, environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"PORTSIDE_DATA_DIR": str(tmp_path), **environ})


def test_an_unreadable_private_key_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    with pytest.raises(ConfigError, match="PORTSIDE_GITHUB_PRIVATE_KEY_PATH"):
        Settings.from_env(
            {
                "PORTSIDE_DATA_DIR": str(tmp_path),
                "PORTSIDE_GITHUB_APP_ID": "12345",
                "PORTSIDE_GITHUB_PRIVATE_KEY_PATH": str(missing),
            }
        )


def test_an_app_id_with_a_key_file_is_accepted(tmp_path: Path) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(PRIVATE_KEY)

    settings = Settings.from_env(
        {
            "PORTSIDE_DATA_DIR": str(tmp_path),
            "PORTSIDE_GITHUB_APP_ID": "12345",
            "PORTSIDE_GITHUB_PRIVATE_KEY_PATH": str(key_file),
        }
    )

    assert settings.github_app_id == 12345
    assert isinstance(settings.github_private_key, Secret)
    assert settings.github_private_key.reveal() == PRIVATE_KEY


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@db:5432/portside", "postgresql+psycopg2://u@db:5432/portside"),
        ("postgresql://u@db/portside", "postgresql+psycopg2://u@db/portside"),
        ("postgresql+psycopg2://u@db/portside", "postgresql+psycopg2://u@db/portside"),
        ("sqlite:////var/lib/portside/db.sqlite3", "sqlite:////var/lib/portside/db.sqlite3"),
    ],
)
def test_postgres_urls_are_normalised_to_psycopg2(
    tmp_path: Path, given: str, expected: str
) -> None:
    settings = Settings.from_env(
        {"PORTSIDE_DATA_DIR": str(tmp_path), "PORTSIDE_DATABASE_URL": given}
    )

    assert settings.database_url == expected


def test_repr_masks_every_secret_and_the_passwords_in_urls(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PORTSIDE_DATA_DIR": str(tmp_path),
            "PORTSIDE_DATABASE_URL": f"postgres://portside:{DB_PASSWORD}@db:5432/portside",
            "PORTSIDE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
            "PORTSIDE_GITHUB_APP_ID": "12345",
            "PORTSIDE_GITHUB_PRIVATE_KEY": PRIVATE_KEY,
            "PORTSIDE_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PORTSIDE_SECRET_KEY": SECRET_KEY,
            "PORTSIDE_TOKEN": TOKEN,
        }
    )

    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        for secret in (DB_PASSWORD, REDIS_PASSWORD, WEBHOOK_SECRET, SECRET_KEY, TOKEN):
            assert secret not in shown
        assert "private-key-body" not in shown
        assert "PRIVATE KEY" not in shown
        # Still useful for debugging: where it connects, with the password masked.
        assert "portside:********@db:5432/portside" in shown
    # The values themselves are intact for the code that needs them.
    assert settings.secret_key.reveal() == SECRET_KEY
    assert settings.github_webhook_secret.reveal() == WEBHOOK_SECRET
    assert DB_PASSWORD in settings.database_url


def test_a_secret_repr_never_shows_its_value() -> None:
    assert repr(Secret(SECRET_KEY)) == "Secret('********')"
    assert SECRET_KEY not in repr([Secret(SECRET_KEY)])
    assert repr(Secret("")) == "Secret('')"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings.from_env({"PORTSIDE_DATA_DIR": str(tmp_path)})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_url = "redis://elsewhere:6379/0"  # type: ignore[misc]
    changed = dataclasses.replace(settings, redis_url="redis://elsewhere:6379/0")
    assert changed.redis_url == "redis://elsewhere:6379/0"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("a-key-from-a-docker-secret\n")
    url_file = tmp_path / "database_url"
    url_file.write_text("postgresql://portside:pw@db/portside\n")

    settings = Settings.from_env(
        {
            "PORTSIDE_DATA_DIR": str(tmp_path),
            "PORTSIDE_SECRET_KEY_FILE": str(key_file),
            "PORTSIDE_DATABASE_URL_FILE": str(url_file),
            "PORTSIDE_REDRIVE_AFTER": "30",
        }
    )

    assert settings.secret_key.reveal() == "a-key-from-a-docker-secret"
    assert settings.database_url == "postgresql+psycopg2://portside:pw@db/portside"
    assert settings.redrive_after == 30


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"PORTSIDE_SECRET_KEY": "x", "PORTSIDE_SECRET_KEY_FILE": "{dir}/key"},
            "set only one of PORTSIDE_SECRET_KEY and PORTSIDE_SECRET_KEY_FILE",
        ),
        ({"PORTSIDE_TOKEN_FILE": "{dir}/missing"}, "PORTSIDE_TOKEN_FILE cannot be read"),
        ({"PORTSIDE_REDRIVE_AFTER": "1"}, "PORTSIDE_REDRIVE_AFTER"),
    ],
)
def test_secret_files_and_the_redrive_delay_are_checked(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    (tmp_path / "key").write_text("k")
    filled = {name: value.format(dir=tmp_path) for name, value in environ.items()}

    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"PORTSIDE_DATA_DIR": str(tmp_path), **filled})
