"""The logging-driver rules both sides apply: Docker's documented options per driver, and
nothing that would relabel lines, copy the environment into them or turn off Docker's
local copy."""

from __future__ import annotations

import pytest

from contracts import logdrivers
from contracts.logdrivers import LogDriver, LogDriverRefused


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"driver": "splunk"}, "log_driver.driver: must be one of"),
        ({"driver": "awslogs", "options": {}}, "log_driver.driver: must be one of"),
        ("syslog", "must be an object"),
        ({"driver": "syslog", "options": {"tag": "x"}}, "options.tag: refused"),
        ({"driver": "gelf", "options": {"labels": "a"}}, "options.labels: refused"),
        ({"driver": "fluentd", "options": {"env": "API_KEY"}}, "options.env: refused"),
        ({"driver": "syslog", "options": {"env-regex": ".*"}}, "options.env-regex: refused"),
        ({"driver": "syslog", "options": {"cache-disabled": "true"}}, "dual logging"),
        ({"driver": "syslog", "options": {"gelf-address": "udp://a:1"}}, "not an option"),
        ({"driver": "local", "options": {"cache-max-size": "10m"}}, "not an option"),
        ({"driver": "journald", "options": {"syslog-address": "udp://a:1"}}, "not an option"),
        ({"driver": "syslog", "options": {"syslog-address": "http://a:1"}}, "an address"),
        ({"driver": "gelf", "options": {"gelf-address": "tcp+tls://a:1"}}, "an address"),
        ({"driver": "syslog", "options": {"syslog-format": "json"}}, "one of rfc3164"),
        ({"driver": "syslog", "options": {"mode": "sometimes"}}, "one of blocking"),
        ({"driver": "json-file", "options": {"compress": "yes"}}, "true or false"),
        ({"driver": "json-file", "options": {"max-size": 10}}, "must be a string"),
        ({"driver": "json-file", "options": {"max-size": "1m\n"}}, "printable ASCII"),
        ({"driver": "syslog", "extra": 1}, "log_driver.extra: unknown key"),
    ],
)
def test_refused(value: object, problem: str) -> None:
    with pytest.raises(LogDriverRefused) as caught:
        logdrivers.parse(value)
    assert any(problem in text for text in caught.value.problems), caught.value.problems


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(LogDriverRefused) as caught:
        logdrivers.parse_by_kind(
            {
                "production": {"driver": "syslog", "options": {"tag": "x", "env": "Y"}},
                "staging": None,
            }
        )
    assert caught.value.problems == [
        "log_driver.production.options.tag: refused (the agent tags lines with the "
        "environment's labels)",
        "log_driver.production.options.env: refused (would copy environment variables "
        "(secrets too) into every line)",
        "log_driver.staging: not an environment kind (preview, production)",
    ]


def test_accepted_drivers_and_what_the_agent_adds() -> None:
    drivers = logdrivers.parse_by_kind(
        {
            "production": {
                "driver": "syslog",
                "options": {
                    "syslog-address": "tcp+tls://logs.example.com:6514",
                    "mode": "blocking",
                },
            },
            "preview": {"driver": "fluentd", "options": {"fluentd-address": "fluentd:24224"}},
        }
    )
    assert drivers["preview"] == LogDriver("fluentd", {"fluentd-address": "fluentd:24224"})
    labels = ["io.portside.environment", "io.portside.kind"]
    options = logdrivers.docker_options(drivers["production"], "portside/hello", labels)
    assert options == {
        "syslog-address": "tcp+tls://logs.example.com:6514",
        "mode": "blocking",  # the admin's choice stands
        "tag": "portside/hello",
        "labels": "io.portside.environment,io.portside.kind",
    }
    # local takes neither tag nor labels; delivery is non-blocking unless asked otherwise.
    local = logdrivers.parse({"driver": "local", "options": {"max-size": "20m"}})
    assert logdrivers.docker_options(local, "portside/hello", labels) == {
        "max-size": "20m",
        "mode": "non-blocking",
    }
    assert logdrivers.parse({"driver": "journald"}).as_json() == {
        "driver": "journald",
        "options": {},
    }
    assert logdrivers.parse_by_kind({"production": None}) == {}
    assert logdrivers.tag("shop", "web") == "portside/shop/web"
