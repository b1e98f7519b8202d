"""Code both services use: errors, auth, config, request models, metrics, HTTP helpers, CLI entry."""
