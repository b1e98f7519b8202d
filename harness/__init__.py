"""Tools that run Croupier rather than being it: the local cluster launcher, the demo, the fault-injection
(chaos) harness with its nemesis, byzantine peer and fault proxy, and the history verifier. Nothing in
`core_ledger`, `edge` or `shared` imports from here."""
