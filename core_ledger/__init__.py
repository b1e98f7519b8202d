"""The core ledger: a serializable, double-entry, hash-chained journal with an HTTP API.

Layers point inward: `http`/`admin_http` → `service` → `domain`; `store` holds the backends.
"""
