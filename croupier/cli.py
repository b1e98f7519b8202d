"""The `croupier` command: `up`, `demo`, `chaos` and `token` here; `ledger ...` and `edge ...` come from the
services' own `cli` modules. Subcommands import what they need lazily so start-up stays cheap."""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import typer

from shared.auth import ROLES, hash_token, new_token

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Croupier: casino money and state.")
PAIR_LEASE_TTL_S = 5.0  # `up --pair`: a copy cut off from PostgreSQL loses the writer lease after this long
ledger_app = typer.Typer(no_args_is_help=True, help="The core ledger.")
edge_app = typer.Typer(no_args_is_help=True, help="A regional edge node.")
app.add_typer(ledger_app, name="ledger")
app.add_typer(edge_app, name="edge")


def package_version() -> str:
    """The installed package's version (from its metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("croupier")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"croupier {package_version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the installed version and exit."
    ),
) -> None:
    """Croupier: casino money and state."""


@app.command()
def up(
    dir: Path = typer.Option(..., "--dir", help="Where configs, data, logs and cluster.json go."),
    players: int = typer.Option(20, help="Seeded players."),
    standby: bool = typer.Option(False, "--standby", help="Also run a synchronous standby ledger."),
    tls: bool = typer.Option(False, "--tls", help="HTTPS everywhere with a CA made for the run (needs trustme)."),
    backend: str = typer.Option(
        "sqlite",
        "--backend",
        help="Ledger store: sqlite (embedded) or postgres (a local PostgreSQL 15 started in DIR/postgres).",
    ),
    ha: bool = typer.Option(
        False,
        "--ha",
        help="With --backend postgres: etcd and a three-member Patroni cluster "
        "(synchronous mode) instead of one server.",
    ),
    pair: bool = typer.Option(
        False,
        "--pair",
        help="With --backend postgres: two ledger copies on one schema, an "
        "active/passive pair (writer_lease); the edges get both URLs.",
    ),
    ledger_fronts: int = typer.Option(
        0,
        "--ledger-fronts",
        min=0,
        max=16,
        help="Front processes serving each ledger's money routes beside it (its `fronts` setting).",
    ),
) -> None:
    """Start a ledger and three edges (eu, us, apac) on embedded SQLite or PostgreSQL; run until interrupted."""
    from rich.console import Console

    from harness.cluster import STANDBY, Cluster, seed

    check_backend(backend, ha)
    if pair and backend != "postgres":
        raise typer.BadParameter("--pair needs --backend postgres", param_hint="--pair")
    if pair and standby:
        raise typer.BadParameter("--pair and --standby are two different ledger pairs: pick one", param_hint="--pair")
    console = Console()
    root = dir.resolve()

    async def run() -> None:
        cluster = Cluster(
            root,
            standby=standby,
            tls=tls,
            backend=backend,
            ha=ha,
            pair=pair,
            writer_lease_ttl_s=PAIR_LEASE_TTL_S,
            ledger_fronts=ledger_fronts,
        )
        try:
            await cluster.start()
            path = cluster.write_info(await seed(cluster, players=players))
            console.print(
                f"Croupier is up on {backend}{' (Patroni HA)' if ha else ''}"
                f"{f' (ledger pair: {STANDBY} waits for the writer lease)' if pair else ''}. "
                f"Contract: [bold]{path}[/] "
                f"(ledger {cluster.url('ledger')}, "
                + ", ".join(f"{e} {cluster.url(e)}" for e in cluster.edge_ids)
                + "). Ctrl-C stops it."
            )
            await wait_for_signal()
        finally:
            await cluster.stop()
            console.print("stopped")

    asyncio.run(run())


@app.command()
def demo(
    duration: float = typer.Option(60.0, "--duration", min=10.0, max=3600.0, help="Seconds of traffic."),
    seed_value: int = typer.Option(1, "--seed", help="Random seed of the simulated traffic."),
    players: int = typer.Option(20, help="Seeded players."),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the cluster up afterwards."),
    dir: Path | None = typer.Option(None, "--dir", help="Directory for the cluster (default: a temporary one)."),
    backend: str = typer.Option("sqlite", "--backend", help="Ledger store: sqlite or postgres (a local PostgreSQL)."),
    ha: bool = typer.Option(False, "--ha", help="With --backend postgres: a three-member Patroni cluster."),
) -> None:
    """Start a cluster, play simulated game traffic in every region, verify the invariants."""
    from rich.console import Console

    from harness.cluster import Cluster
    from harness.demo import run_demo

    check_backend(backend, ha)
    console = Console()
    root = dir.resolve() if dir else Path(tempfile.mkdtemp(prefix="croupier-demo-"))

    async def run() -> bool:
        cluster = Cluster(root, proxied=True, seed=seed_value, log_level="warning", backend=backend, ha=ha)
        try:
            await cluster.start()
            console.print(f"cluster up in {root}")
            ok = await run_demo(cluster, duration, seed_value, players, console)
            if keep_running:
                console.print(f"still running: {root / 'cluster.json'}; Ctrl-C stops it.")
                await wait_for_signal()
            return ok
        finally:
            await cluster.stop()

    ok = asyncio.run(run())
    console.print("[green]all invariants hold[/]" if ok else "[red]invariants violated[/]")
    raise typer.Exit(0 if ok else 1)


@app.command()
def chaos(
    duration: float = typer.Option(60.0, "--duration", min=5.0, max=7200.0, help="Seconds of faults and load."),
    seed_value: int = typer.Option(0, "--seed", help="Seed of faults and workload (printed; reproduces a run)."),
    clients: int = typer.Option(16, min=1, max=256, help="Concurrent clients."),
    dir: Path | None = typer.Option(
        None,
        "--dir",
        help="A new or empty directory for the cluster (default: a "
        "temporary one); removed afterwards unless --keep-dir.",
    ),
    keep_dir: bool = typer.Option(False, "--keep-dir", help="Keep the cluster directory (data, logs) afterwards."),
    history_max: int = typer.Option(
        200_000,
        "--history-max",
        min=1,
        max=10_000_000,
        help="Operations recorded at most: the workload stops issuing there.",
    ),
    faults: str = typer.Option(
        "default",
        "--faults",
        help="Fault kinds, comma-separated: default, all, none, a kind, or -kind to drop one "
        "(e.g. default,rejoin_diverged). See harness/nemesis.py.",
    ),
    backend: str = typer.Option(
        "sqlite",
        "--backend",
        help="Ledger store: sqlite (a synchronous ledger pair) or "
        "postgres (one ledger; the ledger-pair failover kinds are left out).",
    ),
    ha: bool = typer.Option(
        False,
        "--ha",
        help="With --backend postgres: Patroni, its members each in a network namespace (root and nft needed), "
        "and its faults (pg_kill_leader, pg_switchover, pg_cut_leader) join the nemesis.",
    ),
) -> None:
    """Jepsen-style bank test: load, seeded faults, then a check of the history against the journal.

    Always ends with a verdict (exit 0: every check passed; 1: a check failed or the run broke)."""
    import shutil

    from shared import logs

    from harness.chaos import ChaosReport, run_chaos
    from harness.cluster import Cluster, seed
    from harness.nemesis import FAILOVER_FAULTS, HELD_BACK, POSTGRES_HA_FAULTS, parse_faults
    from harness.patroni import PatroniCluster
    from harness.verify import Check

    logs.configure("info")  # faults and lies as JSON lines on stderr; the verdict on stdout
    try:
        kinds = parse_faults(faults)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--faults") from None
    check_backend(backend, ha)
    pair = backend == "sqlite"  # the ledger standby pair (and its failover kinds) runs on SQLite
    if not pair:
        kinds = tuple(k for k in kinds if k not in FAILOVER_FAULTS)
    if ha:
        kinds += tuple(k for k in POSTGRES_HA_FAULTS if k not in kinds)
    else:  # no Patroni to fault (even with --faults all)
        kinds = tuple(k for k in kinds if k not in POSTGRES_HA_FAULTS)
    from rich.console import Console

    console = Console(soft_wrap=True)  # one line per check: easy to grep
    if dir is not None and dir.exists() and (not dir.is_dir() or any(dir.iterdir())):
        raise typer.BadParameter(f"{dir} is not a new or empty directory (it is removed after the run)")
    root = dir.resolve() if dir else Path(tempfile.mkdtemp(prefix="croupier-chaos-"))
    console.print(f"chaos seed {seed_value}, {duration:.0f}s, {clients} clients, cluster in {root}")
    console.print("fault kinds: " + (", ".join(kinds) or "none"), highlight=False)
    held = [k for k in HELD_BACK if k not in kinds]
    if held:
        console.print(
            "held back until their fixes land (add with --faults default,<kind>): " + ", ".join(held), highlight=False
        )

    async def run() -> ChaosReport:
        # With --ha the Patroni members run in network namespaces, so the nemesis can cut one off
        # (pg_cut_leader); started here, handed to the cluster, stopped after it.
        patroni = PatroniCluster(root / "postgres", namespaced=True) if ha else None
        cluster = Cluster(
            root,
            proxied=True,
            seed=seed_value,
            log_level="warning",
            standby=pair,
            synchronous_pair=pair,
            fault_hooks=True,
            backend=backend,
            ha=ha,
            database=patroni,
        )
        try:
            if patroni is not None:
                await asyncio.to_thread(patroni.start)
            await cluster.start()
            seeded = await seed(cluster, players=8, deposit_minor=2_000)
            players = [p["player_id"] for p in seeded["players"]]
            return await run_chaos(
                cluster,
                duration_s=duration,
                seed_value=seed_value,
                clients=clients,
                players=players,
                history_max=history_max,
                faults=kinds,
            )
        except Exception as e:  # noqa: BLE001 (the cluster did not come up: still a verdict)
            return ChaosReport(seed_value, [Check("the cluster started", False, f"{type(e).__name__}: {e}")])
        finally:
            try:
                await cluster.stop()
            finally:
                if patroni is not None:
                    await asyncio.to_thread(patroni.stop)

    try:
        report = asyncio.run(run())
    finally:
        if not keep_dir:
            shutil.rmtree(root, ignore_errors=True)
    console.print("faults: " + ("; ".join(report.fault_log) or "none"))
    for line in report.summary():
        console.print(line)
    for c in report.checks:
        console.print(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}", markup=False, highlight=False)
    if report.ok:
        console.print(f"[green]chaos passed[/] (seed {seed_value})")
    else:
        console.print(f"[red]chaos failed; reproduce with --seed {seed_value} --keep-dir[/]")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def token(
    name: str = typer.Argument(
        ...,
        help="Identity recorded in the journal (e.g. edge-eu, gs-eu, ops-alice); "
        "for role peer, the id of the edge that will hold it (e.g. eu).",
    ),
    role: str = typer.Argument(..., help="One of: " + ", ".join(sorted(ROLES))),
    out: Path = typer.Option(..., "--out", help="File the clear token is written to (mode 0600)."),
) -> None:
    """Make a credential: the clear token goes to --out, the config entry (name, role, sha256) to stdout."""
    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {sorted(ROLES)}")
    secret = new_token()
    out.touch(mode=0o600)
    out.write_text(secret)
    typer.echo(f'[[tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{hash_token(secret)}"')


def check_backend(backend: str, ha: bool) -> None:
    if backend not in ("sqlite", "postgres"):
        raise typer.BadParameter("--backend is sqlite or postgres", param_hint="--backend")
    if ha and backend != "postgres":
        raise typer.BadParameter("--ha needs --backend postgres", param_hint="--ha")


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _register() -> None:
    from core_ledger import cli as ledger_cli
    from edge import cli as edge_cli

    ledger_cli.register(ledger_app)
    edge_cli.register(edge_app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
