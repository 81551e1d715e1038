"""Services: creating, reading and changing one, its variables and its previews' password."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from controlplane.schemas.common import COMPOSE_KEY
from controlplane.statuses import (
    DEPLOY_WHEN,
    PREVIEW_PROTECTIONS,
    VariableKind,
    VariableScope,
    values,
)

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


class VariableSetSchema(Schema):
    value = fields.String(required=True, load_only=True)
    kind = fields.String(
        load_default=VariableKind.RUNTIME.value, validate=validate.OneOf(values(VariableKind))
    )
    scope = fields.String(
        load_default=VariableScope.ALL.value, validate=validate.OneOf(values(VariableScope))
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
