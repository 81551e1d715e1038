# The Portside control plane image (web, workers, beat) used by deploy/compose.yaml.
# PYTHON_IMAGE: another Debian-based Python 3.11 image with pip (a mirror's, a test's).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/portside
COPY setup.py setup.cfg README.rst ./
COPY controlplane controlplane
COPY tasks tasks
COPY buildworker buildworker
COPY hostagent hostagent
COPY contracts contracts
COPY deploy deploy
RUN pip install --no-cache-dir -e .
# The data directory (workspaces, beat schedule) belongs to the unprivileged user.
RUN mkdir -p /var/lib/portside && chown nobody /var/lib/portside
# nobody's home (/nonexistent) cannot be written: gunicorn's control socket goes there.
ENV HOME=/var/lib/portside
USER nobody
