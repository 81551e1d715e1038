"""Wire contracts shared by the control plane, the build worker and the host agent.

A leaf package: standard library and PyYAML only, so a build host and an agent host can
import it without Flask, SQLAlchemy or Celery, and every part enforces the same rules.
"""
