"""The `croupier` command line: one entry point for both services and the local cluster tools."""
