"""The wire contract of both services, in one place: request bodies (`requests`), answer bodies
(`answers`), header names (`headers`) and the typed money operations (`operations`). The problem
codes, with status, meaning and retryability, are the one table of shared/errors.py.
The ledger renders from these models, the edge parses ledger answers into them, the OpenAPI
documents (shared/routes.py) are generated from them, and the tests' fake ledger builds with them.
"""
