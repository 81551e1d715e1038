"""Marshmallow schemas of the REST API; flask-smorest turns them into the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields, missing, validate
from sqlalchemy.orm import object_session

from contracts import envkinds
from controlplane.services import builds, images, pending
from controlplane.statuses import (
    BUILD_LANES,
    DELIVERY_STATUSES,
    DEPLOY_WHEN,
    PREVIEW_PROTECTIONS,
    TOKEN_SCOPES,
)

# A service-level compose key name (``cap_add``, ``sysctls``).
COMPOSE_KEY = r"^[a-z][a-z0-9_]{0,63}$"


class ApiErrorSchema(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Raw()


class TokenCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    scope = fields.String(required=True, validate=validate.OneOf(TOKEN_SCOPES[:3]))
    builds = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(BUILD_LANES),
        metadata={
            "description": "a worker token's lane: trusted builds (the default), "
            "untrusted ones (forks' code) or all"
        },
    )


class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    scope = fields.String()
    builds = fields.String(
        allow_none=True, metadata={"description": "a worker token's lane; null: trusted"}
    )
    host_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "shown once; store it now"})


class HostCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=253))
    accepts_previews = fields.Boolean(load_default=False)
    untrusted = fields.Boolean(
        load_default=False,
        metadata={"description": "runs fork previews (code nobody reviewed), never production"},
    )


class HostSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    accepts_previews = fields.Boolean()
    untrusted = fields.Boolean()
    generation = fields.Integer()
    last_seen_at = fields.DateTime(allow_none=True)
    agent_version = fields.String(allow_none=True)
    created_at = fields.DateTime()


class NewHostSchema(HostSchema):
    token = fields.String(metadata={"description": "the agent's token; shown once"})


class DeliveryQuerySchema(Schema):
    event = fields.String()
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliverySchema(Schema):
    id = fields.Integer()
    guid = fields.String()
    event = fields.String()
    action = fields.String(allow_none=True)
    installation_id = fields.Integer(allow_none=True)
    repository_id = fields.Integer(allow_none=True)
    repository_full_name = fields.String(allow_none=True)
    status = fields.String()
    outcome = fields.String(allow_none=True)
    attempts = fields.Integer()
    received_at = fields.DateTime()
    enqueued_at = fields.DateTime(allow_none=True)
    processed_at = fields.DateTime(allow_none=True)


class DeliveryDetailSchema(DeliverySchema):
    payload = fields.Dict()


class InstallationSchema(Schema):
    id = fields.Integer()
    account_login = fields.String()
    account_type = fields.String()
    suspended_at = fields.DateTime(allow_none=True)
    deleted_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class RepositorySchema(Schema):
    id = fields.Integer()
    installation_id = fields.Integer()
    full_name = fields.String()
    private = fields.Boolean()
    default_branch = fields.String(allow_none=True)
    clone_url = fields.String(allow_none=True)
    compose_path = fields.String(allow_none=True)
    compose_checked_at = fields.DateTime(allow_none=True)


HOSTS_DESCRIPTION = (
    "every host its production environment runs on, its own host first (previews run on one)"
)
REPLICAS_DESCRIPTION = "containers of its production environment on each host (one container)"


class ServiceCreateSchema(Schema):
    name = fields.String(required=True)
    repository = fields.String(
        load_default=None, allow_none=True, metadata={"description": "owner/name on GitHub"}
    )
    git_url = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "any git remote instead of repository: https, ssh, local path"},
    )
    git_token = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        metadata={"description": "https token (or user:password) for git_url; never shown"},
    )
    git_ssh_key = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        metadata={"description": "SSH deploy key (private) for git_url; never shown"},
    )
    poll_interval = fields.Integer(
        load_default=60, metadata={"description": "seconds between polls of git_url (min 10)"}
    )
    branch = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "default: main, or the HEAD of git_url"},
    )
    host = fields.String(load_default=None, metadata={"description": "required unless hosts"})
    hosts = fields.List(fields.String(), metadata={"description": HOSTS_DESCRIPTION})
    replicas = fields.Integer(
        validate=validate.Range(min=1, max=20), metadata={"description": REPLICAS_DESCRIPTION}
    )
    compose_path = fields.String(load_default=None, allow_none=True)
    port = fields.Integer(load_default=None, allow_none=True)
    domain = fields.String(load_default=None, allow_none=True)
    watch_paths = fields.List(fields.String(), load_default=list)
    track_tags = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "a glob of tags (v*) whose pushes deploy, instead of the branch"},
    )


class ServiceSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    repository = fields.String(attribute="repository_full_name")
    repository_id = fields.Integer(allow_none=True)
    git_url = fields.String(allow_none=True)
    git_credentials = fields.Function(
        lambda s: (
            "token" if s.git_token_encrypted else "ssh_key" if s.git_ssh_key_encrypted else None
        ),
        metadata={"description": "which credentials git_url has (never the value)"},
    )
    poll_interval = fields.Integer()
    branch = fields.String()
    host = fields.String(attribute="host.name")
    hosts = fields.Function(
        lambda s: [s.host.name, *(row.host.name for row in s.extra_hosts)],
        metadata={"description": HOSTS_DESCRIPTION},
    )
    replicas = fields.Integer(metadata={"description": REPLICAS_DESCRIPTION})
    compose_path = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    domain = fields.String(allow_none=True)
    watch_paths = fields.List(fields.String())
    track_tags = fields.String(
        allow_none=True,
        metadata={"description": "a glob of tags (v*) whose pushes deploy, instead of the branch"},
    )
    health_check_path = fields.String()
    cpu_limit = fields.Float(allow_none=True)
    memory_limit = fields.String(allow_none=True)
    restart_policy = fields.String()
    previews_enabled = fields.Boolean()
    fork_previews = fields.Boolean()
    fork_previews_on_trusted_hosts = fields.Boolean()
    compose_allow = fields.List(fields.String())
    preview_ttl_seconds = fields.Integer()
    max_previews = fields.Integer()
    preview_protection = fields.String(
        metadata={"description": "none, basic_auth (a login) or ip_allow (source networks)"}
    )
    preview_allow_networks = fields.List(fields.String())
    deploy_when = fields.String(metadata={"description": "pushed or checks_passed"})
    required_checks = fields.List(fields.String())
    checks_timeout = fields.Integer()
    log_driver = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "Docker logging driver per environment kind"},
    )
    created_at = fields.DateTime()


class BuildStepSchema(Schema):
    name = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class BuildImageSchema(Schema):
    service = fields.String(metadata={"description": "the compose service; app: one container"})
    repository = fields.String(allow_none=True)
    tag = fields.String(allow_none=True)
    digest = fields.String(allow_none=True)
    reference = fields.String(
        allow_none=True, metadata={"description": "repository@digest: what runs"}
    )


class BuildImagesField(fields.List):  # type: ignore[type-arg]
    """A build's images (:func:`controlplane.services.images.listed`), read from the
    dumped object itself or from its attribute named by ``of`` (a deployment's ``build``)."""

    def __init__(self, *, of: str | None = None, **kwargs: Any) -> None:
        super().__init__(fields.Nested(BuildImageSchema), dump_only=True, **kwargs)
        self.of = of

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = missing) -> Any:
        build = obj if self.of is None else getattr(obj, self.of, None)
        return images.listed(build) if build is not None else []


class BuildQuerySchema(Schema):
    service = fields.Integer()
    environment = fields.Integer()
    status = fields.String()


class BuildSchema(Schema):
    id = fields.Integer()
    service_id = fields.Integer()
    environment_id = fields.Integer()
    commit_sha = fields.String()
    branch = fields.String()
    status = fields.String()
    commit_message = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    delivery_id = fields.Integer(allow_none=True)
    ref = fields.String(
        allow_none=True,
        metadata={"description": "the branch, tag or commit it was deployed by, or its tag"},
    )
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(metadata={"description": "what the build pushed, by digest"})
    waiting_reason = fields.Method(
        "_waiting_reason",
        allow_none=True,
        metadata={
            "description": "why a queued build is not taken (no worker online), or what a "
            "built one waits for (checks, an approval), or null"
        },
    )

    def _waiting_reason(self, build: Any) -> str | None:
        session = object_session(build)
        return builds.waiting_reason(session, build) if session is not None else None


class BuildDetailSchema(BuildSchema):
    steps = fields.List(fields.Nested(BuildStepSchema))


class DeploySchema(Schema):
    ref = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "a branch, tag or commit SHA; default: the service's branch"},
    )


class ServicePatchSchema(Schema):
    branch = fields.String()
    host = fields.String()
    hosts = fields.List(
        fields.String(),
        validate=validate.Length(min=1),
        metadata={"description": HOSTS_DESCRIPTION},
    )
    replicas = fields.Integer(
        validate=validate.Range(min=1, max=20), metadata={"description": REPLICAS_DESCRIPTION}
    )
    compose_path = fields.String(allow_none=True)
    port = fields.Integer(allow_none=True)
    domain = fields.String(allow_none=True)
    watch_paths = fields.List(fields.String())
    track_tags = fields.String(
        allow_none=True,
        metadata={"description": "a glob of tags (v*) whose pushes deploy, instead of the branch"},
    )
    health_check_path = fields.String(validate=validate.Regexp(r"^/[^\s]*$"))
    cpu_limit = fields.Float(allow_none=True, validate=validate.Range(min=0.01, max=256))
    memory_limit = fields.String(allow_none=True, validate=validate.Regexp(r"^[0-9]+[kmg]?$"))
    restart_policy = fields.String(
        validate=validate.OneOf(("no", "always", "unless-stopped", "on-failure"))
    )
    previews_enabled = fields.Boolean()
    fork_previews = fields.Boolean()
    fork_previews_on_trusted_hosts = fields.Boolean(
        metadata={"description": "let fork previews run on trusted hosts (off: untrusted only)"}
    )
    compose_allow = fields.List(
        fields.String(validate=validate.Regexp(COMPOSE_KEY)),
        validate=validate.Length(max=64),
        metadata={
            "description": "service-level compose keys beyond the policy's allow-list that "
            "production builds may use (audited; fork builds never get them)"
        },
    )
    preview_ttl_seconds = fields.Integer(validate=validate.Range(min=600))
    max_previews = fields.Integer(validate=validate.Range(min=0, max=1000))
    preview_protection = fields.String(
        validate=validate.OneOf(PREVIEW_PROTECTIONS),
        metadata={
            "description": "who may open previews: anyone, a basic-auth login (POST "
            "/v1/services/{id}/preview-password first) or preview_allow_networks"
        },
    )
    preview_allow_networks = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=64),
        metadata={"description": "CIDRs whose clients may open previews under ip_allow"},
    )
    deploy_when = fields.String(
        validate=validate.OneOf(DEPLOY_WHEN),
        metadata={
            "description": "pushed: deploy once built; checks_passed: once the commit's "
            "checks on GitHub passed (required_checks, or all but Portside's own)"
        },
    )
    required_checks = fields.List(
        fields.String(validate=validate.Length(min=1, max=255)),
        validate=validate.Length(max=64),
        metadata={
            "description": "Check Run names or status contexts that must pass; empty: "
            "every one on the commit but Portside's own"
        },
    )
    checks_timeout = fields.Integer(
        validate=validate.Range(min=60, max=7 * 24 * 3600),
        metadata={"description": "seconds the checks may take before the build fails"},
    )
    log_driver = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(allow_none=True),
        metadata={
            "description": "where each environment kind's output is forwarded: "
            '{"production": {"driver": "syslog", "options": {"syslog-address": '
            '"udp://..."}}, "preview": null}; drivers syslog, gelf, fluentd, journald, '
            "json-file, local with Docker's documented options (tag, labels and env are "
            "the agent's); replaces the whole mapping, {} for Docker's default"
        },
    )


class PreviewPasswordSchema(Schema):
    username = fields.String()
    password = fields.String(metadata={"description": "shown this once; only a hash is kept"})


class StepClaimSchema(Schema):
    attempt = fields.Integer(required=True)
    worker = fields.String(required=True, validate=validate.Length(min=1, max=255))


class BuildSpecSchema(Schema):
    build_id = fields.Integer()
    attempt = fields.Integer()
    step = fields.String()
    service_id = fields.Integer()
    service = fields.String()
    environment = fields.String()
    repository = fields.String()
    installation_id = fields.Integer(allow_none=True)
    clone_url = fields.String(allow_none=True)
    git_remote = fields.Boolean()
    commit_sha = fields.String()
    branch = fields.String()
    compose_path = fields.String(allow_none=True)
    compose_allow = fields.List(fields.String())
    images = fields.Dict()
    build_args = fields.Dict(keys=fields.String(), values=fields.String())
    untrusted = fields.Boolean()
    pr_number = fields.Integer(allow_none=True)
    cache_from = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    registry_auth = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        allow_none=True,
        metadata={"description": "build and push: the registry's push credentials, or null"},
    )


class StepResultSchema(Schema):
    attempt = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("succeeded", "failed")))
    error = fields.String(load_default=None, allow_none=True)
    worker = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=255),
        metadata={"description": "claim the next step for this worker in the same exchange"},
    )
    artifacts = fields.Nested(
        "StepArtifactsSchema",
        load_default=None,
        metadata={"description": "upload_compose: the pushed images and pinned compose file"},
    )


class StepDeploymentSchema(Schema):
    id = fields.Integer(allow_none=True, metadata={"description": "null: held at a gate"})
    status = fields.String()
    error = fields.String(allow_none=True)


class StepFinishedSchema(Schema):
    """The answer to a finish that names its ``worker``."""

    next = fields.Nested(BuildSpecSchema, allow_none=True, metadata={"description": "claimed"})
    deployment = fields.Nested(StepDeploymentSchema, allow_none=True)


class HeartbeatSchema(Schema):
    attempt = fields.Integer(required=True)


class ImageSchema(Schema):
    repository = fields.String(required=True)
    tag = fields.String(required=True)
    digest = fields.String(required=True, validate=validate.Regexp(r"^sha256:[0-9a-f]{64}$"))


class StepArtifactsSchema(Schema):
    images = fields.Dict(keys=fields.String(), values=fields.Nested(ImageSchema), required=True)
    compose = fields.String(load_default=None, allow_none=True)
    routed_service = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=63)
    )


class ArtifactsSchema(StepArtifactsSchema):
    attempt = fields.Integer(required=True)


class GitTokenSchema(Schema):
    """An installation token (GitHub), or a git-URL service's own token or SSH key."""

    token = fields.String(allow_none=True)
    ssh_key = fields.String(allow_none=True)
    expires_in = fields.Integer(allow_none=True)


class GitTokenQuerySchema(Schema):
    refresh = fields.Boolean(load_default=False)


class RegistryCredentialsSchema(Schema):
    address = fields.String()
    username = fields.String(allow_none=True)
    password = fields.String(allow_none=True)


class RegistryCreateSchema(Schema):
    address = fields.String(required=True)
    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True, load_only=True)
    installation_id = fields.Integer(load_default=None, allow_none=True)
    # Read-only credentials: the only ones agents receive (write-only here).
    pull_username = fields.String(load_default=None, allow_none=True)
    pull_password = fields.String(load_default=None, allow_none=True, load_only=True)


class RegistrySchema(Schema):
    id = fields.Integer()
    address = fields.String()
    username = fields.String(allow_none=True)
    installation_id = fields.Integer(allow_none=True)
    has_password = fields.Function(lambda r: r.password_encrypted is not None)
    pull_username = fields.String(allow_none=True)
    has_pull_password = fields.Function(lambda r: r.pull_password_encrypted is not None)
    created_at = fields.DateTime()


class DeploymentCreateSchema(Schema):
    build_id = fields.Integer(required=True)


class PromotedSchema(Schema):
    """A deployment's promotion, if it is one (another environment's build, as it is)."""

    promoted_from = fields.String(
        attribute="promoted_from.name",
        allow_none=True,
        metadata={"description": "the environment it was promoted from; null if built here"},
    )
    promoted_by = fields.String(allow_none=True)
    promoted_at = fields.DateTime(allow_none=True)


class DeploymentSchema(PromotedSchema):
    id = fields.Integer()
    environment_id = fields.Integer()
    environment = fields.String(attribute="environment.name")
    build_id = fields.Integer()
    commit_sha = fields.String(attribute="build.commit_sha")
    status = fields.String()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    activated_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(of="build", metadata={"description": "what it runs, by digest"})


class LogLineSchema(Schema):
    id = fields.String()
    line = fields.String()


class LogsSchema(Schema):
    build_id = fields.Integer()
    status = fields.String()
    complete = fields.Boolean()
    lines = fields.List(fields.String())


class VariableSetSchema(Schema):
    value = fields.String(required=True, load_only=True)
    kind = fields.String(load_default="runtime", validate=validate.OneOf(("runtime", "build")))
    scope = fields.String(
        load_default="all", validate=validate.OneOf(("all", "production", "preview"))
    )
    secret = fields.Boolean(load_default=True)


class VariableQuerySchema(Schema):
    reveal = fields.Boolean(load_default=False)


class VariableSchema(Schema):
    name = fields.String()
    kind = fields.String()
    scope = fields.String()
    secret = fields.Boolean(attribute="is_secret")
    value = fields.String(allow_none=True, metadata={"description": "only with ?reveal=true"})
    updated_at = fields.DateTime()


class CurrentDeploymentSchema(PromotedSchema):
    id = fields.Integer()
    build_id = fields.Integer()
    commit_sha = fields.String(attribute="build.commit_sha")
    status = fields.String()
    activated_at = fields.DateTime(allow_none=True)
    images = BuildImagesField(of="build", metadata={"description": "what it runs, by digest"})


class EnvironmentQuerySchema(Schema):
    service = fields.Integer()
    kind = fields.String(
        validate=validate.Regexp(rf"^{envkinds.KIND_RE.pattern}$"),
        metadata={"description": "production, preview, or another such as staging"},
    )


class EnvironmentSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    status = fields.String()
    service_id = fields.Integer()
    service = fields.String(attribute="service.name")
    host = fields.String(attribute="host.name")
    branch = fields.String()
    head_sha = fields.String(allow_none=True)
    pr_number = fields.Integer(allow_none=True)
    from_fork = fields.Boolean()
    status_reason = fields.String(
        allow_none=True, metadata={"description": "why it is refused or awaiting approval"}
    )
    pending_reason = fields.Method(
        "_pending_reason",
        allow_none=True,
        metadata={
            "description": "what a pending, building, deploying, awaiting_checks or "
            "awaiting_approval environment waits for (checks, approval, a build, its "
            "host's agent), or null"
        },
    )
    approved_sha = fields.String(
        allow_none=True, metadata={"description": "the fork commit approved to build and run"}
    )
    secrets_approved_sha = fields.String(
        allow_none=True, metadata={"description": "the fork commit approved to receive secrets"}
    )
    approval_required = fields.Boolean(
        metadata={"description": "each deployment to it waits for a person's approval"}
    )
    held_build_id = fields.Integer(
        allow_none=True,
        metadata={"description": "the build waiting at a gate (checks, approval) to deploy here"},
    )
    domain = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    generation = fields.Integer()
    current_deployment = fields.Nested(CurrentDeploymentSchema, allow_none=True)
    created_at = fields.DateTime()

    def _pending_reason(self, environment: Any) -> str | None:
        if isinstance(environment, dict):  # an answer put together field by field
            return environment.get("pending_reason")
        session = object_session(environment)
        if session is None:
            return None
        interval = current_app.extensions["portside.settings"].agent_interval
        return pending.pending_reason(session, environment, interval)


class ApproveSchema(Schema):
    sha = fields.String(
        required=True,
        validate=validate.Regexp(r"^[0-9a-f]{40}$"),
        metadata={"description": "the commit reviewed; refused (409) unless it is the head"},
    )


class EnvironmentApproveSchema(Schema):
    sha = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^[0-9a-f]{40}$"),
        metadata={
            "description": "the commit reviewed: required for a fork's preview (refused "
            "(409) unless it is the head); for a held deployment, refused unless its commit"
        },
    )


class EnvironmentPatchSchema(Schema):
    approval_required = fields.Boolean(
        metadata={"description": "hold each deployment to it until a person approves it"}
    )


class ApprovalSchema(EnvironmentSchema):
    build_id = fields.Integer(
        allow_none=True, metadata={"description": "the build the approval started, if any"}
    )
    deployment_id = fields.Integer(
        allow_none=True, metadata={"description": "the held deployment it released, if any"}
    )


class RollbackSchema(Schema):
    deployment_id = fields.Integer(load_default=None, allow_none=True)


class HostDetailSchema(HostSchema):
    applied_generation = fields.Integer()
    online = fields.Boolean()
    environments = fields.List(fields.Dict())


class NotificationTargetCreateSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(("webhook", "slack")))
    url = fields.Url(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
    )
    secret = fields.String(
        load_default=None,
        allow_none=True,
        load_only=True,
        validate=validate.Length(min=8, max=255),
        metadata={"description": "signs webhooks; generated (and shown once) when omitted"},
    )


class NotificationTargetSchema(Schema):
    id = fields.Integer()
    service_id = fields.Integer()
    kind = fields.String()
    url = fields.String(metadata={"description": "path and query hidden: they hold credentials"})
    signed = fields.Boolean()
    created_at = fields.DateTime()


class NewNotificationTargetSchema(NotificationTargetSchema):
    secret = fields.String(
        allow_none=True,
        metadata={"description": "the webhook's signing secret, shown this once"},
    )


class AuditQuerySchema(Schema):
    action = fields.String()
    target_type = fields.String()


class AuditEventSchema(Schema):
    id = fields.Integer()
    actor = fields.String()
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    detail = fields.Dict()
    created_at = fields.DateTime()
