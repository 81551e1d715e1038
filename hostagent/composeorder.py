"""Which compose services go before and after the routed one in a switch (pure).

A compose environment's routed service is switched beside its old container (see
``hostagent.plan``); the rest of the project is updated in place around it, in
``depends_on`` order: what does not depend on the routed service first (its own
dependencies among them), then the switch, then what depends on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.yamlsafe import YamlRefused, load_yaml


def _depends_on(service: Any) -> set[str]:
    names = service.get("depends_on") if isinstance(service, Mapping) else None
    if isinstance(names, Mapping | list):
        return {name for name in names if isinstance(name, str)}
    return set()


def switch_phases(compose: str, routed: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(before, after)``: the services to update before the routed one is switched (all
    that do not depend on it, directly or not) and after (those that do), each in the
    file's order (compose orders what it is given by ``depends_on`` itself).

    None when the routed service cannot run twice at once (a fixed ``container_name``)
    or the file is not one the agent would run: the environment is updated in place.
    """
    try:
        document = load_yaml(compose)
    except YamlRefused:
        return None
    services = document.get("services") if isinstance(document, Mapping) else None
    if not isinstance(services, Mapping) or not isinstance(services.get(routed), Mapping):
        return None
    if "container_name" in services[routed]:
        return None
    needs = {name: _depends_on(service) for name, service in services.items()}
    dependents = {routed}
    grew = True
    while grew:
        grew = False
        for name, wanted in needs.items():
            if name not in dependents and wanted & dependents:
                dependents.add(name)
                grew = True
    before = tuple(name for name in services if name not in dependents)
    after = tuple(name for name in services if name in dependents and name != routed)
    return before, after
