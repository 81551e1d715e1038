"""The Flask app factory."""

from __future__ import annotations

import logging
import os

from flask import Flask
from flask_smorest import Api

from controlplane import __version__, dashboard, schemas
from controlplane.api import (
    agent,
    envlogs,
    health,
    openapi,
    pipeline,
    requestdb,
    stages,
    v1,
    webhooks,
)
from controlplane.api import metrics as metrics_api
from controlplane.api import notifications as notifications_api
from controlplane.api.errors import register_error_handlers
from controlplane.api.longpoll import WakeHub
from controlplane.composition import open_database
from controlplane.services import appsetup, logstream
from controlplane.settings import Settings
from tasks import pipeline as task_pipeline


class PortsideApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, documenting errors in Portside's own shape."""

    ERROR_SCHEMA = schemas.ApiErrorSchema

    def __init__(self, app: Flask) -> None:
        super().__init__(app, spec_kwargs={"extra_plugins": [openapi.ErrorResponsesPlugin()]})


def create_app(settings: Settings | None = None) -> Flask:
    """Build the control plane's WSGI app from ``settings`` (default: the environment)."""
    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.webhook_max_bytes,
        JSON_SORT_KEYS=False,
        API_TITLE="Portside",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=openapi.SWAGGER_UI_URL,
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    app.extensions["portside.settings"] = settings
    database, redis_client = open_database(settings)
    requestdb.init_app(app, database)
    github_source = appsetup.AppSource(settings, database)
    app.extensions["portside.github_source"] = github_source
    app.wsgi_app = webhooks.mount(  # type: ignore[method-assign,assignment]
        app.wsgi_app,
        webhooks.GitHubWebhookEndpoint(settings, database, github_source.webhook_secret),
    )
    app.extensions["portside.redis"] = redis_client
    app.extensions["portside.log_streams"] = logstream.LogStreams(
        logstream.blocking_redis(settings.redis_url, settings.log_keepalive),
        database,
        settings.log_keepalive,
    )
    app.extensions["portside.wake_hub"] = WakeHub(settings.redis_url)
    task_pipeline.configure_sender(settings)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(metrics_api.blueprint)
    app.register_blueprint(openapi.swagger_ui_assets())
    app.register_blueprint(agent.blueprint)
    app.register_blueprint(dashboard.blueprint)
    api = PortsideApi(app)
    for blueprint in (*v1.BLUEPRINTS, pipeline.worker_api, pipeline.deployments_api):
        api.register_blueprint(blueprint)
    api.register_blueprint(notifications_api.blueprint)
    api.register_blueprint(envlogs.blueprint)
    api.register_blueprint(stages.blueprint)
    agent.document(api.spec, app)
    # After Api(): flask-smorest registers an HTTPException handler of its own.
    register_error_handlers(app)
    logging.getLogger("controlplane").setLevel(logging.INFO)
    return app
