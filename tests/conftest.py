"""Plugins of the whole suite: every answer of an in-process service is checked against its OpenAPI
document (tests/security/answer_check.py)."""

pytest_plugins = ["tests.security.answer_check"]
