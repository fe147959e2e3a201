"""Former home of the database plumbing, now split by idea; this re-export is only for
branches being merged that still import from here. Import from the modules themselves;
remove this module once no branch does (issue 21)."""

from provisioner.coltypes import UTCDateTime
from provisioner.store.postgres import EVENT_ORDER_LOCK
from provisioner.store.postgres import MIGRATION_LOCK
from provisioner.store.postgres import RETENTION_LOCK
from provisioner.store.postgres import exclusive_job
from provisioner.store.postgres import order_event_ids
from provisioner.store.reads import SingleReads
from provisioner.store.reads import page_with_total
from provisioner.store.sqlite import SQLITE_BUSY_TIMEOUT_MS
from provisioner.store.sqlite import SQLITE_SYNCHRONOUS
from provisioner.store.sqlite import FairLock
from provisioner.store.sqlite import configure_engine
from provisioner.store.sqlite import is_sqlite
from provisioner.store.transactions import is_storage_full
from provisioner.store.transactions import probe_write
from provisioner.store.transactions import storage_full
from provisioner.store.transactions import write_transaction
from provisioner.store.writes import DeferredWrites
from provisioner.store.writes import defer_write
from provisioner.store.writes import deferring_writes
from provisioner.store.writes import insert_rows
from provisioner.store.writes import settle_writes

__all__ = [
    "EVENT_ORDER_LOCK",
    "MIGRATION_LOCK",
    "RETENTION_LOCK",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_SYNCHRONOUS",
    "DeferredWrites",
    "FairLock",
    "SingleReads",
    "UTCDateTime",
    "configure_engine",
    "defer_write",
    "deferring_writes",
    "exclusive_job",
    "insert_rows",
    "is_sqlite",
    "is_storage_full",
    "order_event_ids",
    "page_with_total",
    "probe_write",
    "settle_writes",
    "storage_full",
    "write_transaction",
]
