"""Services that track a git URL instead of a GitHub repository.

No webhook reaches Portside from such a remote: a control-worker task polls each one
with ``git ls-remote`` at the service's ``poll_interval`` and queues a build (the same
:func:`~controlplane.services.pushes.start_build` a push takes) when the head of the
tracked branch changed. No GitHub feedback is sent for them: they have no repository
row, so :mod:`~controlplane.services.feedback` finds no installation and does nothing.
The network call is made outside any transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.gitremote import (
    GitAuth,
    GitRemoteError,
    GitUrlRefused,
    RemoteRefs,
    check_git_url,
    ls_remote,
)
from controlplane.crypto import SecretBox
from controlplane.errors import Malformed, PortsideError, TemporarilyUnavailable, ValidationFailed
from controlplane.models import Service, utcnow
from controlplane.services import pushes

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 60
MIN_POLL_INTERVAL = 10
MAX_POLL_INTERVAL = 24 * 3600
# The owner part of a git-URL service's repository name, which names its images:
# ``<registry>/git/<service>``.
IMAGE_OWNER = "git"
FULL_SHA = re.compile(r"[0-9a-f]{40}")
SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")


@dataclass(frozen=True, slots=True)
class GitSource:
    """What a service tracking a git URL is created with (credentials never shown)."""

    url: str
    token: str | None = None
    ssh_key: str | None = None
    poll_interval: int = DEFAULT_POLL_INTERVAL

    def __repr__(self) -> str:
        return f"GitSource(url={self.url!r}, poll_interval={self.poll_interval})"

    @property
    def auth(self) -> GitAuth | None:
        return GitAuth(self.token, self.ssh_key) if self.token or self.ssh_key else None


def check_source(source: GitSource, *, allow_local: bool) -> GitSource:
    """``source`` tidied; Malformed naming the field when it cannot be tracked."""
    url = source.url.strip()
    try:
        kind = check_git_url(url, allow_local=allow_local)
    except GitUrlRefused as exc:
        raise Malformed(f"git_url refused: {exc}", details={"git_url": [str(exc)]}) from None
    token = (source.token or "").strip() or None
    ssh_key = (source.ssh_key or "").strip() or None
    if token and ssh_key:
        raise Malformed(
            "give git_token or git_ssh_key, not both",
            details={"git_token": ["only one kind of credentials"]},
        )
    if token and kind not in ("https", "http"):
        raise Malformed(
            "git_token is for https URLs", details={"git_token": [f"the URL is {kind}"]}
        )
    if ssh_key and kind != "ssh":
        raise Malformed(
            "git_ssh_key is for ssh URLs", details={"git_ssh_key": [f"the URL is {kind}"]}
        )
    if ssh_key and "PRIVATE KEY-----" not in ssh_key:
        raise Malformed(
            "git_ssh_key is not a private key", details={"git_ssh_key": ["a PEM/OpenSSH key"]}
        )
    if not MIN_POLL_INTERVAL <= source.poll_interval <= MAX_POLL_INTERVAL:
        raise Malformed(
            "poll_interval out of range",
            details={"poll_interval": [f"between {MIN_POLL_INTERVAL} and {MAX_POLL_INTERVAL}"]},
        )
    return GitSource(url, token, ssh_key, source.poll_interval)


def read_remote(url: str, auth: GitAuth | None) -> RemoteRefs:
    """The remote's refs; TemporarilyUnavailable when it does not answer now, ValidationFailed
    when it refuses (no such repository, credentials refused)."""
    try:
        return ls_remote(url, auth)
    except GitRemoteError as exc:
        if exc.transient:
            raise TemporarilyUnavailable(f"cannot reach {url}: {exc}; try again") from None
        raise ValidationFailed(
            f"cannot read {url}: {exc}", details={"git_url": [str(exc)]}
        ) from None


def attach(service: Service, source: GitSource, box: SecretBox | None, refs: RemoteRefs) -> None:
    """Make ``service`` track ``source``, its credentials encrypted; the head it has now
    counts as seen, so the first deploy is asked for (``portside deploy``) and polling
    builds what is pushed after."""
    if box is None and source.auth is not None:
        raise ValidationFailed("PORTSIDE_SECRET_KEY must be set to store git credentials")
    service.git_url = source.url
    service.git_token_encrypted = box.encrypt(source.token) if box and source.token else None
    service.git_ssh_key_encrypted = box.encrypt(source.ssh_key) if box and source.ssh_key else None
    service.poll_interval = source.poll_interval
    service.git_last_sha = refs.resolve(service.branch)
    service.git_polled_at = utcnow()


def auth_of(service: Service, box: SecretBox | None) -> GitAuth | None:
    """The service's credentials, decrypted (for ls-remote and the step holder only)."""
    if box is None:
        if service.git_token_encrypted or service.git_ssh_key_encrypted:
            raise TemporarilyUnavailable("PORTSIDE_SECRET_KEY is needed to open git credentials")
        return None
    token = box.decrypt(service.git_token_encrypted) if service.git_token_encrypted else None
    key = box.decrypt(service.git_ssh_key_encrypted) if service.git_ssh_key_encrypted else None
    return GitAuth(token, key) if token or key else None


def resolve_ref(box: SecretBox | None, service: Service, ref: str) -> tuple[str, str] | None:
    """(SHA, message) of a branch, tag or SHA of the service's remote, through ls-remote;
    a full SHA is taken as it is (its clone fails if the remote lacks it), an abbreviated
    one only when it starts a branch or tag head; None when nothing matches."""
    assert service.git_url is not None
    refs = read_remote(service.git_url, auth_of(service, box))
    sha = refs.resolve(ref)
    if sha is None and FULL_SHA.fullmatch(ref):
        sha = ref
    if sha is None and SHORT_SHA.fullmatch(ref):
        sha = next((s for s in set(refs.refs.values()) if s.startswith(ref)), None)
    if sha is None:
        return None
    return sha, f"{ref} of {service.git_url}"


def due_services(session: Session, now: dt.datetime) -> list[int]:
    """Git-URL services whose poll interval has passed."""
    rows = session.execute(
        select(Service.id, Service.git_polled_at, Service.poll_interval).where(
            Service.deleted_at.is_(None), Service.git_url.is_not(None)
        )
    ).all()
    return [
        service_id
        for service_id, polled_at, interval in rows
        if polled_at is None or now - polled_at >= dt.timedelta(seconds=interval)
    ]


def poll_service(session: Session, box: SecretBox | None, service_id: int) -> int | None:
    """Read the service's remote and queue a build of its branch head when that changed
    since the last poll; the new build's id, or None. Commits the session: the network
    call runs between two short transactions."""
    service = session.get(Service, service_id)
    if service is None or service.git_url is None or service.deleted_at is not None:
        return None
    url, branch, auth = service.git_url, service.branch, auth_of(service, box)
    session.commit()
    try:
        refs = ls_remote(url, auth)
        error = None
    except GitRemoteError as exc:
        refs, error = None, str(exc)
    service = session.get(Service, service_id, with_for_update=True)
    if service is None or service.git_url != url:
        session.commit()
        return None
    service.git_polled_at = utcnow()
    sha = refs.resolve(branch) if refs is not None else None
    if sha is None:
        log.warning(
            "polling %s: %s", service.name, error or f"branch {branch} is not on the remote"
        )
        session.commit()
        return None
    build = None
    if sha != service.git_last_sha:
        service.git_last_sha = sha
        build = pushes.start_build(
            session,
            service,
            pushes.production_environment(session, service),
            sha,
            branch=branch,
            commit_message=f"{branch} of {url}",
            pushed_at=utcnow(),
        )
    session.flush()
    build_id = build.id if build is not None else None
    session.commit()
    return build_id


def poll_due(session: Session, box: SecretBox | None, now: dt.datetime | None = None) -> list[int]:
    """Poll every due git-URL service; the ids of the builds queued."""
    started = []
    for service_id in due_services(session, now or utcnow()):
        try:
            build_id = poll_service(session, box, service_id)
        except PortsideError as exc:  # its credentials cannot be opened: the others go on
            session.rollback()
            log.warning("polling service %s: %s", service_id, exc)
            continue
        if build_id is not None:
            started.append(build_id)
    return started
