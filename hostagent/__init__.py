"""The host agent: fetch desired state, observe Docker, plan, apply, report.

Plain Python on purpose: stdlib, docker and requests only, so it runs on any server.
"""
