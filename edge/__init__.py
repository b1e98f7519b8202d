"""The regional edge node: game-server HTTP API, ledger client, CRDT state, peer sync, local store."""
