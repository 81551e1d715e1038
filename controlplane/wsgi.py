"""The WSGI entry gunicorn loads: ``controlplane.wsgi:app``."""

from controlplane.app import create_app

app = create_app()
