"""Certificates for a local TLS cluster: a CA made for the run and a certificate for each name.

`trustme` is a test/dev dependency, imported only when a TLS cluster is asked for. Files go in one
folder (mode 0700): `ca.pem`, and `<name>.pem` (the chain) with `<name>.key` (mode 0600) per name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def make_certificates(folder: Path, names: Iterable[str], *, organization: str = "Croupier local cluster") -> None:
    """A CA for this run in `folder/ca.pem` and a certificate for 127.0.0.1/localhost per name."""
    import trustme  # a test/dev dependency: only a TLS cluster needs it

    ca = trustme.CA(organization_name=organization)
    folder.mkdir(mode=0o700, exist_ok=True)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for name in names:
        cert = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
        cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(folder / f"{name}.pem"), append=True)
        cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        (folder / f"{name}.key").chmod(0o600)
