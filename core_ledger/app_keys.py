"""The keys under which the composition root (core_ledger/app.py) puts the ledger's parts into the
aiohttp application, for the handlers (core_ledger/http.py, core_ledger/admin_http.py) to find."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.credentials import CredentialReloader

from core_ledger.audit import Auditor
from core_ledger.backup_jobs import Backups
from core_ledger.config import LedgerConfig
from core_ledger.domain import Command
from core_ledger.fencing import Fencing
from core_ledger.lease_keeper import LeaseKeeper
from core_ledger.liabilities import LiabilitiesSampler
from core_ledger.reads import LedgerReads
from core_ledger.rounds_job import StaleRounds
from core_ledger.service import LedgerService
from core_ledger.standby_tailer import StandbyTailer
from core_ledger.writer import Result

SERVICE = web.AppKey("ledger_service", LedgerService)
READS = web.AppKey("ledger_reads", LedgerReads)
CONFIG = web.AppKey("ledger_config", LedgerConfig)
STANDBY = web.AppKey("ledger_standby", StandbyTailer)  # present only in standby mode
AUDITOR = web.AppKey("ledger_auditor", Auditor)
FENCING = web.AppKey("ledger_fencing", Fencing)
CREDENTIALS = web.AppKey("ledger_credentials", CredentialReloader)
BACKUPS = web.AppKey("ledger_backups", Backups)
LIABILITIES = web.AppKey("ledger_liabilities", LiabilitiesSampler)
LEASE = web.AppKey("ledger_writer_lease", LeaseKeeper)  # present only with writer_lease (a pair on PostgreSQL)
STALE_ROUNDS = web.AppKey("ledger_stale_rounds", StaleRounds)
# How the money routes submit their commands: to this process's service, or, in a front process
# (core_ledger/front_app.py), over its channel to the ledger process with the request's credential.
Submit = Callable[[web.Request, list[Command]], Awaitable[list[Result]]]
SUBMIT: web.AppKey[Submit] = web.AppKey("ledger_submit")
