"""Docker logging drivers a service may forward its environments' output with.

One rule set for both sides: the control plane checks what an admin asks for
(``PATCH /v1/services/{id}`` ``log_driver``) and the agent checks the snapshot again
before a container gets it. Only Docker's documented options of each driver pass, and
none that decides what a line is labelled with: the agent sets ``tag`` and ``labels`` from
the environment's own labels, and ``env``/``env-regex`` (which would copy environment
variables, secrets included, into every line) are never set. ``cache-disabled`` is refused
too: Docker's dual logging (its local cache) is what keeps ``docker logs`` and Portside's
own log shipping working under a remote driver.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

KINDS = ("production", "preview")
# Options every driver takes (docs.docker.com/engine/logging/configure, "delivery mode").
COMMON = frozenset({"mode", "max-buffer-size"})
# Dual logging's cache, for drivers Docker cannot read back (docs: "dual logging").
CACHE = frozenset({"cache-max-size", "cache-max-file", "cache-compress"})
# What an admin may set per driver: Docker's documented options minus the agent's own.
DRIVERS: Mapping[str, frozenset[str]] = {
    "syslog": frozenset(
        {
            "syslog-address",
            "syslog-facility",
            "syslog-format",
            "syslog-tls-ca-cert",
            "syslog-tls-cert",
            "syslog-tls-key",
            "syslog-tls-skip-verify",
        }
    )
    | COMMON
    | CACHE,
    "gelf": frozenset(
        {
            "gelf-address",
            "gelf-compression-type",
            "gelf-compression-level",
            "gelf-tcp-max-reconnect",
            "gelf-tcp-reconnect-delay",
        }
    )
    | COMMON
    | CACHE,
    "fluentd": frozenset(
        {
            "fluentd-address",
            "fluentd-async",
            "fluentd-async-reconnect-interval",
            "fluentd-buffer-limit",
            "fluentd-max-retries",
            "fluentd-request-ack",
            "fluentd-retry-wait",
            "fluentd-sub-second-precision",
        }
    )
    | COMMON
    | CACHE,
    "journald": COMMON,
    "json-file": frozenset({"max-size", "max-file", "compress"}) | COMMON,
    "local": frozenset({"max-size", "max-file", "compress"}) | COMMON,
}
# Set by the agent alone, or never: the reason an admin's value is refused.
RESERVED = {
    "tag": "the agent tags lines with the environment's labels",
    "labels": "the agent names the labels lines carry",
    "labels-regex": "the agent names the labels lines carry",
    "env": "would copy environment variables (secrets too) into every line",
    "env-regex": "would copy environment variables (secrets too) into every line",
    "cache-disabled": "Docker's dual logging keeps docker logs and Portside's log shipping working",
}
# Drivers that take ``tag`` and ``labels`` (docs: each driver's options table).
TAGGED = frozenset({"syslog", "gelf", "fluentd", "journald"})
LABELLED = TAGGED | {"json-file"}
ENUMS: Mapping[str, frozenset[str]] = {
    "mode": frozenset({"blocking", "non-blocking"}),
    "syslog-format": frozenset({"rfc5424", "rfc5424micro", "rfc3164"}),
    "gelf-compression-type": frozenset({"gzip", "zlib", "none"}),
}
BOOLEANS = frozenset(
    {
        "syslog-tls-skip-verify",
        "fluentd-async",
        "fluentd-request-ack",
        "fluentd-sub-second-precision",
        "compress",
        "cache-compress",
    }
)
ADDRESS_SCHEMES: Mapping[str, frozenset[str]] = {
    "syslog-address": frozenset({"udp", "tcp", "tcp+tls", "unix", "unixgram"}),
    "gelf-address": frozenset({"udp", "tcp"}),
    "fluentd-address": frozenset({"tcp", "unix"}),
}
MAX_OPTIONS = 32
MAX_VALUE = 512
VALUE_RE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class LogDriver:
    """A Docker logging driver and the options an admin gave it (checked)."""

    driver: str
    options: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"driver": self.driver, "options": dict(sorted(self.options.items()))}


class LogDriverRefused(ValueError):
    """What is wrong, one message per key path."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _value_problem(key: str, value: str) -> str | None:
    if len(value) > MAX_VALUE or not VALUE_RE.fullmatch(value):
        return f"at most {MAX_VALUE} printable ASCII characters"
    if key in ENUMS and value not in ENUMS[key]:
        return f"one of {', '.join(sorted(ENUMS[key]))}"
    if key in BOOLEANS and value not in ("true", "false"):
        return "true or false"
    if key in ADDRESS_SCHEMES:
        scheme, sep, rest = value.partition("://")
        # fluentd also takes a bare host:port (tcp).
        bare = key == "fluentd-address" and not sep and ":" in value
        if not bare and (not sep or not rest or scheme not in ADDRESS_SCHEMES[key]):
            return f"an address {'|'.join(sorted(ADDRESS_SCHEMES[key]))}://..."
    return None


def parse(value: object, where: str = "log_driver") -> LogDriver:
    """A checked driver from ``{"driver": ..., "options": {...}}``; LogDriverRefused
    naming every problem otherwise."""
    if not isinstance(value, Mapping):
        raise LogDriverRefused([f"{where}: must be an object with driver and options"])
    problems = [f"{where}.{key}: unknown key" for key in value if key not in ("driver", "options")]
    driver = value.get("driver")
    if not isinstance(driver, str) or driver not in DRIVERS:
        raise LogDriverRefused(
            [*problems, f"{where}.driver: must be one of {', '.join(sorted(DRIVERS))}"]
        )
    options = value.get("options") or {}
    if not isinstance(options, Mapping):
        raise LogDriverRefused([*problems, f"{where}.options: must be an object of strings"])
    if len(options) > MAX_OPTIONS:
        problems.append(f"{where}.options: at most {MAX_OPTIONS} options")
    checked: dict[str, str] = {}
    for key, text in options.items():
        path = f"{where}.options.{key}"
        if key in RESERVED:
            problems.append(f"{path}: refused ({RESERVED[key]})")
        elif key not in DRIVERS[driver]:
            problems.append(f"{path}: not an option of Docker's {driver} driver")
        elif not isinstance(text, str):
            problems.append(f"{path}: must be a string")
        elif (problem := _value_problem(key, text)) is not None:
            problems.append(f"{path}: must be {problem}")
        else:
            checked[key] = text
    if problems:
        raise LogDriverRefused(problems)
    return LogDriver(driver, checked)


def parse_by_kind(
    value: object, where: str = "log_driver", kinds: Collection[str] = KINDS
) -> dict[str, LogDriver]:
    """``{"production": {...}, "preview": {...}}`` (each optional, null for Docker's
    default; ``kinds`` the environment kinds there are) checked; LogDriverRefused naming
    every problem otherwise."""
    if not isinstance(value, Mapping):
        raise LogDriverRefused([f"{where}: must be an object keyed by environment kind"])
    problems: list[str] = []
    drivers: dict[str, LogDriver] = {}
    for kind, item in value.items():
        if kind not in kinds:
            known = ", ".join(sorted(kinds))
            problems.append(f"{where}.{kind}: not an environment kind ({known})")
        elif item is not None:
            try:
                drivers[kind] = parse(item, f"{where}.{kind}")
            except LogDriverRefused as exc:
                problems.extend(exc.problems)
    if problems:
        raise LogDriverRefused(problems)
    return drivers


def tag(environment: str, compose_service: str | None = None) -> str:
    """The tag of an environment's lines: ``portside/<environment>`` and, in a compose
    environment, ``/<compose service>``."""
    return "/".join(["portside", environment, *([compose_service] if compose_service else [])])


def docker_options(driver: LogDriver, tag_text: str, labels: Sequence[str]) -> dict[str, str]:
    """The ``--log-opt`` set the agent applies: the admin's options, the environment's
    tag and label names where the driver takes them, and non-blocking delivery unless
    asked otherwise (a slow log server must not stall the app writing to stdout)."""
    options = dict(driver.options)
    if driver.driver in TAGGED:
        options["tag"] = tag_text
    if driver.driver in LABELLED and labels:
        options["labels"] = ",".join(labels)
    options.setdefault("mode", "non-blocking")
    return options
