"""The `croupier` command. Subcommands import their service lazily so start-up stays cheap."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Croupier: casino money and state.")
ledger_app = typer.Typer(no_args_is_help=True, help="The core ledger.")
edge_app = typer.Typer(no_args_is_help=True, help="A regional edge node.")
app.add_typer(ledger_app, name="ledger")
app.add_typer(edge_app, name="edge")


def _register() -> None:
    from core_ledger import cli as ledger_cli

    ledger_cli.register(ledger_app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
