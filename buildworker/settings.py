"""The build worker's settings: the few ``PORTSIDE_*`` variables a build host needs.

Read with the same rules as the control plane's (:mod:`contracts.environ`), but without
it: a build host has no database, GitHub App or secret key to configure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from contracts.compose_policy import parse_memory
from contracts.environ import (
    DEFAULT_BUILD_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_REGISTRY,
    DEFAULT_URL,
    REDIS_SCHEMES,
    Secret,
    SettingError,
    UntrustedMode,
    default_data_dir,
    mask_url,
    registry_setting,
    require_int,
    require_url,
    setting_reader,
    untrusted_mode,
)

# PORTSIDE_BUILD_CACHE_MAX's default: the worker's images and build cache, in bytes.
DEFAULT_BUILD_CACHE_MAX = 20 << 30


def cache_budget(raw: str) -> int:
    """PORTSIDE_BUILD_CACHE_MAX: bytes, with an optional K, M or G (powers of 1024)."""
    value = parse_memory(raw)
    if value is None or value < 0:
        raise SettingError(
            f"PORTSIDE_BUILD_CACHE_MAX must be a size in bytes (K, M or G suffix), got {raw!r}"
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class BuildWorkerSettings:
    """Where the broker, the control plane and the registry are; how long a build runs."""

    redis_url: str = DEFAULT_REDIS_URL
    url: str = DEFAULT_URL
    token: Secret = Secret("")
    allow_insecure_url: bool = False
    registry: str = DEFAULT_REGISTRY
    build_timeout: int = DEFAULT_BUILD_TIMEOUT
    # Which builds this worker takes: "no" (trusted only), "only" (forks' only), "yes".
    build_untrusted: UntrustedMode = "no"
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    # Its images and build cache are pruned, oldest first, down to this many bytes.
    cache_max: int = DEFAULT_BUILD_CACHE_MAX

    def __repr__(self) -> str:
        """Every field, the Redis password masked (the token is a Secret)."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["redis_url"] = mask_url(self.redis_url)
        return f"BuildWorkerSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BuildWorkerSettings:
        """Read and check them; a SettingError names the variable at fault."""
        get = setting_reader(environ)
        return cls(
            redis_url=require_url(
                "PORTSIDE_REDIS_URL", get("REDIS_URL") or DEFAULT_REDIS_URL, REDIS_SCHEMES
            ),
            url=require_url("PORTSIDE_URL", get("URL") or DEFAULT_URL, ("http", "https")).rstrip(
                "/"
            ),
            token=Secret(get("TOKEN") or ""),
            allow_insecure_url=get("ALLOW_INSECURE_URL") == "1",
            registry=registry_setting(get("REGISTRY") or DEFAULT_REGISTRY),
            build_timeout=require_int(
                "PORTSIDE_BUILD_TIMEOUT",
                get("BUILD_TIMEOUT") or str(DEFAULT_BUILD_TIMEOUT),
                10,
                86400,
            ),
            build_untrusted=untrusted_mode(get("BUILD_UNTRUSTED") or "no"),
            data_dir=Path(get("DATA_DIR") or default_data_dir()),
            cache_max=cache_budget(get("BUILD_CACHE_MAX") or str(DEFAULT_BUILD_CACHE_MAX)),
        )
