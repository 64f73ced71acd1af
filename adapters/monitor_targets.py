"""Which monitor a user means, and how far back a drift report may look: shared by both backends.

`resolve(monitors, target)` accepts a monitor's name, its model (`fraud-model`, `fraud-model:3`) or
its endpoint (`fraud-api`, `fraud-api/blue`), case-insensitively; an unknown target gets a "did
you mean" and the list of what is monitored, several matches get their names.
"""

from __future__ import annotations

import difflib

from adapters.service import InvalidRequest, Monitor, NotFound

MAX_WINDOW_DAYS = 90


def resolve(monitors: list[Monitor], target: str) -> Monitor:
    """The one monitor watching `target` (monitor, model, "model:version", endpoint or "endpoint/deployment")."""
    wanted = target.strip().lower()
    if not wanted:
        raise InvalidRequest("Name a model, an endpoint or a monitor, e.g. `drift fraud-model`.")
    for monitor in monitors:
        if monitor.name.lower() == wanted:
            return monitor
    found = [m for m in monitors if wanted in (m.model.lower(), m.model_name.lower(), m.endpoint.lower(),
                                               m.endpoint_name.lower())]
    if len(found) == 1:
        return found[0]
    if found:
        raise InvalidRequest(f"Several monitors watch '{target}': {', '.join(m.name for m in found)}. "
                             f"Name one of them.")
    raise unknown_target(monitors, target)


def unknown_target(monitors: list[Monitor], target: str) -> NotFound:
    words = {w.lower(): w for m in monitors for w in (m.name, m.model_name, m.endpoint_name) if w}
    close = difflib.get_close_matches(target.lower(), sorted(words), n=1, cutoff=0.6)
    hint = f" Did you mean `{words[close[0]]}`?" if close else ""
    watched = ", ".join(f"{m.model_name or m.name} ({m.endpoint_name or 'no endpoint'})" for m in monitors)
    return NotFound("monitor", target, f"No monitor watches '{target}'.{hint} "
                    + (f"Monitored: {watched}." if monitors else "This workspace has no monitors."))


def check_window(window_days: int) -> None:
    if not isinstance(window_days, int) or isinstance(window_days, bool) or not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise InvalidRequest(f"The window must be from 1 to {MAX_WINDOW_DAYS} days, got {window_days!r}.")
