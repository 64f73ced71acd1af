"""What the worst-case inputs of issue 17 (item 8) cost, before and after.

    .venv/bin/python bench/hostile_inputs.py

1. The JSON depth check of the webhooks on an unterminated string of `\\"` pairs: the old check (a
   regular expression for JSON strings, searched from every position) against the one-pass scanner
   in adapters/jsonsafe.py, at growing sizes. The old one is run only on small inputs (it is
   quadratic: 58 KB took 32 s on this machine); the new one up to the 1 MB webhook limit.
2. Tag stripping of message text on '<a' x N: the old pattern `<[^>]+>` against the new `<[^<>]*>`.

Each figure is the best of 3 runs, in seconds. A quadratic cost shows as ×4 per doubling, a linear
one as ×2.
"""

from __future__ import annotations

import itertools
import re
import time

from _common import ensure_importable, load_average, write_results

ensure_importable()

from adapters.jsonsafe import too_deep  # noqa: E402

_OLD_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_OLD_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def old_too_deep(text: str, limit: int = 32) -> bool:
    """adapters/azureml/events.py before issue 17."""
    brackets = _OLD_BRACKETS.sub("", _OLD_STRING.sub("", text))
    return any(depth > limit for depth in itertools.accumulate(map(_STEP.__getitem__, brackets)))


OLD_TAG, NEW_TAG = re.compile(r"<[^>]+>"), re.compile(r"<[^<>]*>")


def best(fn, *args) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return round(min(times), 5)


def main() -> None:
    load = load_average()
    figures: dict[str, dict[str, float]] = {"depth_old": {}, "depth_new": {}, "tags_old": {}, "tags_new": {}}
    for size in (2_000, 4_000, 8_000, 16_000):
        figures["depth_old"][f"{size} B"] = best(old_too_deep, '"' + '\\"' * (size // 2))
    for size in (16_000, 64_000, 256_000, 1_048_576):
        figures["depth_new"][f"{size} B"] = best(too_deep, '"' + '\\"' * (size // 2), 32)
    for n in (1_000, 2_000, 4_000, 8_000):
        figures["tags_old"][f"'<a' x {n}"] = best(OLD_TAG.sub, " ", "<a" * n)
    for n in (8_000, 60_000, 120_000):
        figures["tags_new"][f"'<a' x {n}"] = best(NEW_TAG.sub, " ", "<a" * n)
    for name, row in figures.items():
        print(f"{name:10} " + "  ".join(f"{k}: {v:.4f} s" for k, v in row.items()))
    write_results("hostile_inputs", figures, {"depth_new at 1 MB": "linear (×2 per doubling)",
                                              "tags_new": "linear"}, load_before=load)


if __name__ == "__main__":
    main()
