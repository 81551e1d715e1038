"""Process settings: one frozen object built once from ``PORTSIDE_*`` variables.

Nothing here is read at import time; ``Settings.from_env(os.environ)`` is called by the
entry point of each process and the result passed down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from contracts.environ import (
    DEFAULT_BUILD_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_REGISTRY,
    DEFAULT_URL,
    REDIS_SCHEMES,
    Secret,
    SettingError,
    default_data_dir,
    mask_url,
    registry_setting,
    require_int,
    require_url,
    setting_reader,
    untrusted_mode,
)
from controlplane.errors import ConfigError

__all__ = ["Secret", "Settings", "default_data_dir", "mask_url"]


def _database_url(raw: str) -> str:
    for bare in ("postgres://", "postgresql://"):
        if raw.startswith(bare):
            # SQLAlchemy 2.1 would pick psycopg 3; Portside ships psycopg2.
            raw = "postgresql+psycopg2://" + raw[len(bare) :]
    scheme = urlsplit(raw).scheme
    if not (scheme.startswith("postgresql") or scheme.startswith("sqlite")):
        raise ConfigError(
            f"PORTSIDE_DATABASE_URL must be a postgresql:// or sqlite:// URL, got {mask_url(raw)!r}"
        )
    return raw


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Portside process is configured with."""

    database_url: str
    redis_url: str = DEFAULT_REDIS_URL
    github_app_id: int | None = None
    github_private_key: Secret = Secret("")
    github_webhook_secret: Secret = Secret("")
    github_api_url: str = "https://api.github.com"
    registry: str = DEFAULT_REGISTRY
    secret_key: Secret = Secret("")
    # Earlier keys, still accepted for decryption until `portside secrets rotate-key` ran.
    old_secret_keys: tuple[Secret, ...] = ()
    url: str = DEFAULT_URL
    token: Secret = Secret("")
    # What Prometheus presents as its bearer token for /metrics (a read or admin API token
    # works too); without either, /metrics answers 401.
    metrics_token: Secret = Secret("")
    # A build worker talks to a plain http:// PORTSIDE_URL off loopback only if told so.
    allow_insecure_url: bool = False
    # Services may track a local path (/srv/repo, file://) only where the admin says so.
    allow_local_git: bool = False
    preview_domain: str = ""
    agent_interval: int = 10
    agent_publish_host: str = ""
    build_timeout: int = DEFAULT_BUILD_TIMEOUT
    # A running build whose worker sent no heartbeat for this long is taken over.
    build_stale_after: int = 90
    # Which builds a build worker takes: "no" (trusted only), "only" (forks' only), "yes".
    build_untrusted: Literal["no", "only", "yes"] = "no"
    # An enqueued delivery still unprocessed after this long is sent again by the outbox.
    redrive_after: int = 120
    # The registry keeps each service's last this many production images (and every
    # image of an environment's last this many deployments); services.retention.
    registry_keep: int = 10
    # Seconds a followed build log may stay quiet before the stream sends a keep-alive
    # comment and checks whether the build ended (cancelled builds never close their log).
    log_keepalive: int = 15
    webhook_max_bytes: int = 25 * 1024 * 1024
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Secret):
                text = repr(value)
            elif field.name == "old_secret_keys":
                text = f"({len(value)} keys)"
            elif field.name in ("database_url", "redis_url"):
                text = repr(mask_url(value))
            else:
                text = repr(value)
            shown.append(f"{field.name}={text}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate settings; raise ConfigError naming the variable at fault."""
        try:
            return cls._from_env(environ)
        except SettingError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def _from_env(cls, environ: Mapping[str, str]) -> Settings:
        get = setting_reader(environ)
        data_dir = Path(get("DATA_DIR") or default_data_dir())
        database_url = _database_url(
            get("DATABASE_URL") or f"sqlite:///{data_dir / 'portside.sqlite3'}"
        )
        kwargs: dict[str, object] = {"database_url": database_url, "data_dir": data_dir}
        if (raw := get("REDIS_URL")) is not None:
            kwargs["redis_url"] = require_url("PORTSIDE_REDIS_URL", raw, REDIS_SCHEMES)
        if (raw := get("GITHUB_APP_ID")) is not None:
            kwargs["github_app_id"] = require_int("PORTSIDE_GITHUB_APP_ID", raw, 1, 2**63)
        key = get("GITHUB_PRIVATE_KEY")
        key_path = get("GITHUB_PRIVATE_KEY_PATH")
        if key and key_path:
            raise ConfigError(
                "set only one of PORTSIDE_GITHUB_PRIVATE_KEY and PORTSIDE_GITHUB_PRIVATE_KEY_PATH"
            )
        if key_path:
            try:
                key = Path(key_path).read_text()
            except OSError as exc:
                raise ConfigError(
                    f"PORTSIDE_GITHUB_PRIVATE_KEY_PATH cannot be read: {exc.strerror}"
                ) from None
        if key:
            key = key.replace("\\n", "\n")
            if "PRIVATE KEY-----" not in key:
                raise ConfigError("PORTSIDE_GITHUB_PRIVATE_KEY is not a PEM private key")
            kwargs["github_private_key"] = Secret(key)
        if ("github_app_id" in kwargs) != ("github_private_key" in kwargs):
            raise ConfigError(
                "PORTSIDE_GITHUB_APP_ID and PORTSIDE_GITHUB_PRIVATE_KEY(_PATH) must be set together"
            )
        if (raw := get("GITHUB_WEBHOOK_SECRET")) is not None:
            kwargs["github_webhook_secret"] = Secret(raw)
        if (raw := get("GITHUB_API_URL")) is not None:
            kwargs["github_api_url"] = require_url(
                "PORTSIDE_GITHUB_API_URL", raw, ("http", "https")
            ).rstrip("/")
        if (raw := get("REGISTRY")) is not None:
            kwargs["registry"] = registry_setting(raw)
        if (raw := get("SECRET_KEY")) is not None:
            if len(raw) < 16:
                raise ConfigError("PORTSIDE_SECRET_KEY must be at least 16 characters long")
            kwargs["secret_key"] = Secret(raw)
        if (raw := get("SECRET_KEY_OLD")) is not None:
            kwargs["old_secret_keys"] = tuple(
                Secret(key.strip()) for key in raw.split(",") if key.strip()
            )
        if (raw := get("URL")) is not None:
            kwargs["url"] = require_url("PORTSIDE_URL", raw, ("http", "https")).rstrip("/")
        if (raw := get("TOKEN")) is not None:
            kwargs["token"] = Secret(raw)
        if (raw := get("ALLOW_INSECURE_URL")) is not None:
            kwargs["allow_insecure_url"] = raw == "1"
        if (raw := get("ALLOW_LOCAL_GIT")) is not None:
            kwargs["allow_local_git"] = raw == "1"
        if (raw := get("METRICS_TOKEN")) is not None:
            if len(raw) < 16:
                raise ConfigError("PORTSIDE_METRICS_TOKEN must be at least 16 characters long")
            kwargs["metrics_token"] = Secret(raw)
        if (raw := get("PREVIEW_DOMAIN")) is not None:
            kwargs["preview_domain"] = raw.lower()
        if (raw := get("AGENT_INTERVAL")) is not None:
            kwargs["agent_interval"] = require_int("PORTSIDE_AGENT_INTERVAL", raw, 1, 3600)
        if (raw := get("AGENT_PUBLISH_HOST")) is not None:
            kwargs["agent_publish_host"] = raw
        if (raw := get("BUILD_TIMEOUT")) is not None:
            kwargs["build_timeout"] = require_int("PORTSIDE_BUILD_TIMEOUT", raw, 10, 86400)
        if (raw := get("REDRIVE_AFTER")) is not None:
            kwargs["redrive_after"] = require_int("PORTSIDE_REDRIVE_AFTER", raw, 5, 86400)
        if (raw := get("LOG_KEEPALIVE")) is not None:
            kwargs["log_keepalive"] = require_int("PORTSIDE_LOG_KEEPALIVE", raw, 1, 30)
        if (raw := get("BUILD_STALE_AFTER")) is not None:
            kwargs["build_stale_after"] = require_int("PORTSIDE_BUILD_STALE_AFTER", raw, 15, 3600)
        if (raw := get("BUILD_UNTRUSTED")) is not None:
            kwargs["build_untrusted"] = untrusted_mode(raw)
        if (raw := get("REGISTRY_KEEP")) is not None:
            kwargs["registry_keep"] = require_int("PORTSIDE_REGISTRY_KEEP", raw, 1, 1000)
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
