"""The bot's commands, declared in the modules imported here, in the order `help` shows them.

The folders of commands/ are its capabilities: base (what every command is built on), resources
(Azure ML resources, read and changed), changes (the gate, approvals, audit, what follows a
change), alerts (alerts, monitoring, posture), digests, admin (the bot itself), language (plain
language). Each folder's __init__ says what it holds.

`python -m commands.catalog` prints the command reference of docs/commands.md (a test keeps them equal).
"""

from commands.admin import admin, general, outbox
from commands.alerts import alerts, monitoring, posture
from commands.changes import approvals, audit
from commands.digests import digest
from commands.resources import compare, endpoints, featurestore, jobs, lifecycle, models, platform, rollout
from commands.base.registry import CATALOG, Registry

# Declaring registers, in import order; another module may import one of these first (bot.api
# imports commands.changes.audit), so the order `help` and the manifest show is set here, once.
CATALOG.arrange([module.__name__ for module in (models, endpoints, rollout, jobs, compare, lifecycle, featurestore,
                                                monitoring, platform, posture, approvals, alerts, digest, audit, admin,
                                                outbox,
                                                general)])


def catalog() -> Registry:
    return CATALOG


def reference_table() -> str:
    """The command reference of docs/commands.md, generated from the declarations."""
    lines = ["| task | command | what it does | example | role |", "| --- | --- | --- | --- | --- |"]
    cell = lambda text: text.replace("|", "\\|")   # noqa: E731 - a `|` would end the table cell, even in code
    lines += [f"| {task} | `{cell(c.usage)}` | {cell(c.summary)} | `{cell(c.example)}` | {c.role.label} |"
              for task, commands in CATALOG.by_task() for c in commands]   # grouped as `help` groups them
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_table())
