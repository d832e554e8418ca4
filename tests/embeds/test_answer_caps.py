"""Daily answer caps of the widget over real sockets (embeds/limits.py `daily_answer_checks`): a visitor, and an
embed, may ask only so many questions a day; past that the socket says `visitor_daily_limit` / `embed_daily_limit`
with `retry_after` (status 429) and stays usable, and another embed is not affected. The server here has generous
per-minute limits and caps of 2 per visitor and 3 per embed."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.conftest import LOG_DIR
from tests.embeds.conftest import GENEROUS_LIMITS, Door, embed_make, workspace_on_plan
from tests.embeds.test_limits import ask
from tests.live import LiveServer, start_live_server

SHOP = "https://shop.example"


@pytest.fixture(scope="module")
def capped_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="asgi-widget-caps", extra_env={
            **GENEROUS_LIMITS, "WIDGET_ANSWERS_PER_VISITOR_DAY": "2", "WIDGET_ANSWERS_PER_EMBED_DAY": "3"})
    yield server
    server.process.stop()


def visitor_socket(door: Door, key: str):
    session = door.token(key, SHOP)
    conversation = door.conversation_new(session["token"])
    socket = door.socket(conversation, session["token"])
    assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    return socket


def test_answers_are_capped_per_visitor_and_per_embed_per_day(django_db_blocker, capped_server):
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Caps Co", plan="pro")
        door = Door(capped_server, ws.host)
        first, second = embed_make(ws.workspace, [SHOP]), embed_make(ws.workspace, [SHOP], name="Second")

    with visitor_socket(door, first.public_key) as socket:
        assert ask(socket, "a1")["type"] == "agent_completed"
        assert ask(socket, "a2")["type"] == "agent_completed"
        refused = ask(socket, "a3")
        assert refused["type"] == "error" and refused["code"] == "visitor_daily_limit", refused
        assert 1 <= refused["retry_after"] <= 86400
        assert ask(socket, "a4")["code"] == "visitor_daily_limit"  # refusals are not counted against the embed

    with visitor_socket(door, first.public_key) as socket:  # a new visitor: the embed's third answer of the day
        assert ask(socket, "b1")["type"] == "agent_completed"
        refused = ask(socket, "b2")
        assert refused["type"] == "error" and refused["code"] == "embed_daily_limit", refused
        assert refused["retry_after"] >= 1
        socket.send(json.dumps({"type": "ping", "nonce": "still-here"}))  # the socket stays usable
        while (frame := json.loads(socket.recv(timeout=30)))["type"] != "pong":
            pass

    with visitor_socket(door, second.public_key) as socket:  # another embed of the same workspace
        assert ask(socket, "c1")["type"] == "agent_completed"
