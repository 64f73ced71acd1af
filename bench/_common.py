"""What every benchmark script shares: the machine it ran on, percentiles, and the results file.

Figures measured on a loaded machine are upper bounds: each result records the 1-minute load
average before and after, beside the figures.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

PACKAGES = ("mlops-teams-bot", "botbuilder-core", "botbuilder-integration-aiohttp", "aiohttp", "numpy",
            "scipy", "pyarrow", "psycopg")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def write_results(name: str, figures: dict[str, Any], targets: dict[str, Any], *, load_before: float) -> Path:
    """bench/results/<name>.json with the figures, the targets, the machine and the load average."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"benchmark": name, "figures": figures, "targets": targets,
            "load_average_1min": {"before": load_before, "after": load_average()},
            "machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def ensure_importable() -> None:
    """Run from a fresh clone as `python bench/<name>.py`: the project root is importable."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
