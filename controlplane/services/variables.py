"""Per-service variables: runtime environment for the container, or docker build
arguments; values are encrypted at rest and shown only when an admin asks."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.errors import NotFound, ValidationFailed
from controlplane.models import RegistryCredential, Variable
from controlplane.services import audit
from controlplane.services.catalog import get_service
from controlplane.settings import Settings
from controlplane.statuses import VariableKind, VariableScope, values

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
KINDS = values(VariableKind)
# Which environments get a variable: previews can have their own database URL, say.
SCOPES = values(VariableScope)


def set_variable(
    session: Session,
    box: SecretBox,
    service_id: int,
    *,
    name: str,
    value: str,
    kind: str = VariableKind.RUNTIME,
    scope: str = VariableScope.ALL,
    is_secret: bool = True,
    actor: str,
) -> Variable:
    service = get_service(session, service_id)
    if not VARIABLE_NAME.match(name):
        raise ValidationFailed(
            "not a variable name", details={"name": ["letters, digits and _, not first a digit"]}
        )
    if scope not in SCOPES:
        raise ValidationFailed("unknown scope", details={"scope": [f"one of {', '.join(SCOPES)}"]})
    if kind not in KINDS:
        raise ValidationFailed("unknown kind", details={"kind": [f"one of {', '.join(KINDS)}"]})
    variable = session.scalar(
        select(Variable).where(
            Variable.service_id == service.id,
            Variable.environment_id.is_(None),
            Variable.kind == kind,
            Variable.name == name,
        )
    )
    if variable is None:
        variable = Variable(service_id=service.id, name=name, kind=kind, value_encrypted=b"")
        session.add(variable)
    variable.value_encrypted = box.encrypt(value)
    variable.is_secret = is_secret
    variable.scope = scope
    session.flush()
    # The value itself never goes to the audit log.
    audit.record(session, actor, "variable.set", "service", service.id, name=name, kind=kind)
    return variable


def list_variables(session: Session, service_id: int) -> list[Variable]:
    service = get_service(session, service_id)
    return list(
        session.scalars(
            select(Variable)
            .where(Variable.service_id == service.id)
            .order_by(Variable.kind, Variable.name)
        )
    )


def delete_variable(session: Session, service_id: int, kind: str, name: str, actor: str) -> None:
    variable = session.scalar(
        select(Variable).where(
            Variable.service_id == service_id, Variable.kind == kind, Variable.name == name
        )
    )
    if variable is None:
        raise NotFound(f"service {service_id} has no {kind} variable {name}")
    session.delete(variable)
    audit.record(session, actor, "variable.delete", "service", service_id, name=name, kind=kind)


def secrets_of(session: Session, settings: Settings, service_id: int) -> list[str]:
    """Every secret value a text about ``service_id`` could leak: its secret variables
    (build and runtime, every environment), registry passwords, Portside's own keys."""
    values = [
        secret.reveal()
        for secret in (
            settings.github_webhook_secret,
            settings.secret_key,
            settings.token,
            settings.metrics_token,
            *settings.old_secret_keys,
        )
    ]
    if not settings.secret_key:
        return values  # nothing can have been stored encrypted
    box = SecretBox.from_settings(settings)
    stored = session.scalars(
        select(Variable.value_encrypted).where(
            Variable.service_id == service_id, Variable.is_secret.is_(True)
        )
    )
    values.extend(box.decrypt(ciphertext) for ciphertext in stored)
    registries = session.execute(
        select(RegistryCredential.password_encrypted, RegistryCredential.pull_password_encrypted)
    )
    for row in registries:
        values.extend(box.decrypt(ciphertext) for ciphertext in row if ciphertext)
    return values
