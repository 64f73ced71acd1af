"""Running bots and their claims: who holds what, so that a restarted bot takes its own back at once.

Every process has an owner id `<instance>/<boot>`: the instance id survives a restart
(MLOPSBOT_INSTANCE_ID, default the host name), the boot part is new each start. Claims (outbox
leases, watches and job watches being evaluated, operations being settled) are stored under the
owner id, so a process that starts again under the same instance id knows which claims its
previous run held, and releases them at once instead of waiting for their leases to run out:

    released = await instances.take_back(tx, instance="bot-1", owner="bot-1/5f2a9c01", now=now)
    await instances.beat(tx, instance="bot-1", owner="bot-1/5f2a9c01", now=now)   # the write probe

`beat` is one small upsert of this instance's heartbeat row: the readiness probe (GET /readyz)
runs it in a transaction, so a database that still answers reads but refuses writes (a full disk,
a read-only file) makes the bot not ready.

Two processes that share one database must not share an instance id (each would take back the
other's claims); in Kubernetes and Docker the host name differs per replica.
"""

from __future__ import annotations

from datetime import datetime

from adapters.storage.base import Transaction, encode_time, utc

SEPARATOR = "/"


def owner_id(instance: str, boot: str) -> str:
    return f"{instance}{SEPARATOR}{boot}"


def instance_of(owner: str) -> str:
    """The instance part of an owner id ('' for an owner id of another form, e.g. 'terminal-42')."""
    instance, separator, _ = owner.rpartition(SEPARATOR)
    return instance if separator else ""


async def beat(tx: Transaction, *, instance: str, owner: str, now: datetime) -> None:
    """Write this instance's heartbeat row (insert or update)."""
    moment = encode_time(utc(now, "now"))
    await tx.execute(
        "INSERT INTO bot_instances (instance_id, owner, started_at, seen_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (instance_id) DO UPDATE SET seen_at = excluded.seen_at, owner = excluded.owner, "
        "started_at = CASE WHEN bot_instances.owner = excluded.owner THEN bot_instances.started_at "
        "ELSE excluded.started_at END",
        (instance, owner, moment, moment))


async def take_back(tx: Transaction, *, instance: str, owner: str) -> dict[str, int]:
    """Release every claim an earlier run of `instance` holds (any owner `<instance>/...` but
    `owner`); return how many of each kind were released."""
    prefix = instance + SEPARATOR
    earlier = "<> ? AND substr({column}, 1, ?) = ?"
    params = (owner, len(prefix), prefix)
    released = {
        "outbox": await tx.execute(
            "UPDATE outbox SET lease_owner = '', lease_until = NULL WHERE state = 'pending' AND lease_owner "
            + earlier.format(column="lease_owner"), params),
        "watches": await tx.execute(
            "UPDATE watches SET state = 'watching', claimed_by = '', claimed_until = NULL "
            "WHERE state = 'evaluating' AND claimed_by " + earlier.format(column="claimed_by"), params),
        "job_watches": await tx.execute(
            "UPDATE job_watches SET state = 'watching', claimed_by = '', claimed_until = NULL "
            "WHERE state = 'checking' AND claimed_by " + earlier.format(column="claimed_by"), params),
        "operations": await tx.execute(
            "UPDATE pending_operations SET claimed_by = '', claimed_until = NULL "
            "WHERE state = 'pending' AND claimed_by " + earlier.format(column="claimed_by"), params),
    }
    return {kind: count for kind, count in released.items() if count}
