"""The send path hands botbuilder a card that is JSON already (issue 21, item 2): the wire JSON is
the same as msrest's own key-by-key serialization gave, and the card is neither walked nor copied."""

from __future__ import annotations

import copy
import json

from botbuilder.core import CardFactory, MessageFactory
from botframework.connector import models
from msrest.serialization import Serializer

from bot.teams import SerializedCard, _invoke_answer, reply_activity
from commands.base.context import Reply
from commands.base.ui import button, card, facts, text


def sample_card() -> dict:
    return card("Endpoint fraud-api", [text("Ünïcode ✓ and \"quotes\" <b>", weight="Bolder"),
                                       facts([("p99", 12.5), ("instances", 3), ("healthy", True), ("note", None)])],
                subtitle="Workspace ml-prod (prod)", actions=[button("Refresh", "endpoint", "fraud-api", refresh=True)])


def serializer() -> Serializer:
    return Serializer({k: v for k, v in models.__dict__.items() if isinstance(v, type)})


def test_the_wire_json_of_a_card_is_what_msrest_made_of_it_key_by_key():
    built = sample_card()
    ours = reply_activity(Reply("Endpoint fraud-api", card=built))
    theirs = MessageFactory.attachment(CardFactory.adaptive_card(json.loads(json.dumps(built))))
    theirs.summary = ours.summary
    assert type(ours.attachments[0].content) is SerializedCard
    wire = json.dumps(serializer().body(copy.deepcopy(ours), "Activity"), sort_keys=True)
    expected = json.dumps(serializer().body(copy.deepcopy(theirs), "Activity"), sort_keys=True)
    assert wire == expected
    assert json.loads(wire)["attachments"][0]["content"] == built


def test_a_sent_card_is_not_copied_or_walked():
    built = SerializedCard(sample_card())
    assert copy.deepcopy(built) is built
    activity = MessageFactory.attachment(CardFactory.adaptive_card(built))
    body = serializer().body(activity, "Activity")
    assert body["attachments"][0]["content"] is built


def test_a_refreshed_card_in_an_invoke_answer_serializes_the_same():
    built = sample_card()
    answer = _invoke_answer("application/vnd.microsoft.card.adaptive", built)
    assert answer.body.serialize() == {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
                                       "value": built}
