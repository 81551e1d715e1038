"""Key rotation: every secret stored encrypted, re-encrypted with the current key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.models import NotificationTarget, RegistryCredential, Service, Variable
from controlplane.services import appsetup, audit

# A service's encrypted columns: its previews' basic-auth login, its git remote's credentials.
SERVICE_SECRETS = ("preview_htpasswd_encrypted", "git_token_encrypted", "git_ssh_key_encrypted")


def rotate_key(session: Session, box: SecretBox, actor: str) -> dict[str, int]:
    """Re-encrypt variables, registry passwords, notification secrets, services' own
    secrets and the registered GitHub App's in one transaction; afterwards the old key
    (PORTSIDE_SECRET_KEY_OLD) can be dropped."""
    counts = {"variables": 0, "registries": 0, "notifications": 0, "service_secrets": 0}
    for variable in session.scalars(select(Variable).with_for_update()):
        variable.value_encrypted = box.rotate(variable.value_encrypted)
        counts["variables"] += 1
    for registry in session.scalars(select(RegistryCredential).with_for_update()):
        if registry.password_encrypted is not None:
            registry.password_encrypted = box.rotate(registry.password_encrypted)
            counts["registries"] += 1
        if registry.pull_password_encrypted is not None:
            registry.pull_password_encrypted = box.rotate(registry.pull_password_encrypted)
    for target in session.scalars(select(NotificationTarget).with_for_update()):
        if target.secret_encrypted is not None:
            target.secret_encrypted = box.rotate(target.secret_encrypted)
            counts["notifications"] += 1
    for service in session.scalars(select(Service).with_for_update()):
        for column in SERVICE_SECRETS:
            ciphertext = getattr(service, column)
            if ciphertext is not None:
                setattr(service, column, box.rotate(ciphertext))
                counts["service_secrets"] += 1
    counts["github_app"] = appsetup.rotate(session, box)
    audit.record(session, actor, "secrets.rotate_key", "secrets", None, **counts)
    return counts
