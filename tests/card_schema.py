"""Validate cards against the official Adaptive Cards 1.5 schema (tests/fixtures/schemas).

The only relaxation: the card root may carry Teams' `msteams` key (e.g. `{"width": "Full"}`),
which the schema's `additionalProperties: false` would otherwise reject.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import jsonschema

SCHEMA = Path(__file__).parent / "fixtures" / "schemas" / "adaptive-card-1.5.json"


@functools.cache
def _validator() -> jsonschema.Draft6Validator:
    schema = json.loads(SCHEMA.read_text())
    schema = copy.deepcopy(schema)
    schema["definitions"]["AdaptiveCard"]["properties"]["msteams"] = {"type": "object"}
    return jsonschema.Draft6Validator(schema)


def card_errors(card: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(card)]


def assert_valid_card(card: dict) -> None:
    assert card.get("version") == "1.5"
    errors = card_errors(card)
    assert errors == [], errors
    assert len(json.dumps(card).encode()) < 28_000
