"""How well, and how fast, does the bot understand plain language?

On the labelled set (tests/fixtures/language/phrasings.txt: every command, three personas), with
the demo workspace and a real SQLite store, every phrasing goes through the real handler
(`ChatHandler.handle`, the path Teams messages take) and the answer is compared with the label:

- reads:   the share answered with the intended command ("Read as `endpoint fraud-api`" + its card);
- changes: the share proposed with the intended command (the proposal card's button carries it);
- changed: how many phrasings changed anything by themselves (every row of the workspace and of
           the bot's store compared before and after; must be 0);
- a confusion table by command (intended -> what was answered, for the misses);
- the time to understand one message (reading, entity matching, scoring and the decision, with
  the workspace's names already indexed, as they are for a minute after the first question):
  median and p95 over every phrasing, repeated.

    .venv/bin/python bench/language.py        # prints the figures, writes bench/results/language.json

Targets: ≥ 90 % of reads and ≥ 90 % of changes with the intended command; 0 changed; understanding
under 5 ms at the median.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import load_average, percentile, write_results  # noqa: E402
from tests.language_cases import PHRASINGS, World, load  # noqa: E402
from tests.test_language import _proposed  # noqa: E402

REPEAT = 20
HELDOUT = PHRASINGS.with_name("heldout.txt")


def answered(reply, change: bool) -> str:
    if change:
        return _proposed(reply) or _kind(reply)
    first = reply.text.split("\n", 1)[0]
    if first.startswith("Read as `"):
        return first.removeprefix("Read as `").removesuffix("`")
    return _kind(reply)


def _kind(reply) -> str:
    title = reply.card["body"][0]["text"] if reply.card else ""
    if title == "Is this the change you mean?":
        return "(proposed) " + (_proposed(reply) or "?")
    return {"Which one?": "(asked which)", "Not sure what you mean": "(suggestions)"}.get(
        title, "(other) " + reply.text.split("\n", 1)[0][:60])


async def heldout_shares() -> dict[str, float]:
    """The same measure on the held-out set (never tuned on): how well the vocabulary generalises."""
    cases = load(HELDOUT)
    with tempfile.TemporaryDirectory() as directory:
        async with World(Path(directory)) as world:
            results = [(case, answered(await world.say(case.text), case.change)) for case in cases]
    reads = [(c, got) for c, got in results if not c.change]
    changes = [(c, got) for c, got in results if c.change]
    for case, got in results:
        if got != case.expected:
            print(f"  held-out miss: {case.text!r}: wanted `{case.expected}`, got {got}")
    return {"phrasings": len(cases), "reads": len(reads), "changes": len(changes),
            "reads_answered_with_intended_command": round(sum(g == c.expected for c, g in reads) / len(reads), 4),
            "changes_proposed_with_intended_command": round(sum(g == c.expected for c, g in changes) / len(changes), 4)}


async def main() -> None:
    load_before = load_average()
    cases = load()
    with tempfile.TemporaryDirectory() as directory:
        async with World(Path(directory)) as world:
            before = world.snapshot()
            results = []
            for case in cases:
                reply = await world.say(case.text)
                results.append((case, answered(reply, case.change)))
            after = world.snapshot()
            changed_tables = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
            started = len(world.spawned)

            ctx = await world.context()
            interpreter = world.handler.language
            await interpreter.index(ctx)
            timings = []
            for _ in range(REPEAT):
                for case in cases:
                    start = time.perf_counter()
                    await interpreter.understand(ctx, case.text)
                    timings.append((time.perf_counter() - start) * 1000)

    reads = [(c, got) for c, got in results if not c.change]
    changes = [(c, got) for c, got in results if c.change]
    read_share = sum(got == c.expected for c, got in reads) / len(reads)
    change_share = sum(got == c.expected for c, got in changes) / len(changes)
    by_command: dict[str, Counter] = defaultdict(Counter)
    for case, got in results:
        by_command[case.command][got.split()[0] if got and not got.startswith("(") else got] += 1
    misses = [(c.text, c.expected, got) for c, got in results if got != c.expected]

    figures = {
        "phrasings": len(cases), "reads": len(reads), "changes": len(changes),
        "reads_answered_with_intended_command": round(read_share, 4),
        "changes_proposed_with_intended_command": round(change_share, 4),
        "phrasings_that_changed_anything": len(changed_tables) + started,
        "changed_tables": changed_tables,
        "understand_ms_median": round(percentile(timings, 50), 3),
        "understand_ms_p95": round(percentile(timings, 95), 3),
        "understand_samples": len(timings),
        "confusion": {command: dict(counts) for command, counts in sorted(by_command.items())},
        "misses": misses,
    }
    print(f"{len(cases)} phrasings: {len(reads)} reads, {len(changes)} changes")
    print(f"reads answered with the intended command:   {read_share:.1%}")
    print(f"changes proposed with the intended command: {change_share:.1%}")
    print(f"phrasings that changed anything:            {figures['phrasings_that_changed_anything']}")
    print(f"understanding one message: median {figures['understand_ms_median']} ms, "
          f"p95 {figures['understand_ms_p95']} ms ({len(timings)} samples)")
    print("confusion (intended command: answered as ... x times), misses only:")
    for command, counts in sorted(by_command.items()):
        wrong = {k: v for k, v in counts.items() if k != command}
        if wrong:
            shown = ", ".join(f"{k} ×{v}" for k, v in wrong.items())
            print(f"  {command:14} right {counts.get(command, 0):3}  {shown}")
    for text, expected, got in misses:
        print(f"  miss: {text!r}: wanted `{expected}`, got {got}")
    figures["held_out"] = await heldout_shares()
    print(f"held-out set ({figures['held_out']['phrasings']} phrasings, never tuned on): reads "
          f"{figures['held_out']['reads_answered_with_intended_command']:.1%}, changes "
          f"{figures['held_out']['changes_proposed_with_intended_command']:.1%}")
    write_results("language", figures, {"reads_answered_with_intended_command": ">= 0.9",
                                        "changes_proposed_with_intended_command": ">= 0.9",
                                        "phrasings_that_changed_anything": 0, "understand_ms_median": "< 5"},
                  load_before=load_before)


if __name__ == "__main__":
    asyncio.run(main())
