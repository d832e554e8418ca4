"""Visitor data rights (issue #18 item 5): erase one visitor and nothing of them remains — in the workspace schema,
in vectors (Chroma and the analytics clusters' centroids), in Redis (replay logs, answer locks, widget counters) or in
files — while a second visitor of the same workspace keeps everything; export one visitor as JSON. Over the REST API
and the dashboard, owner/admin only, with an audit entry.

The visitor is seeded through the real services (tests/analytics_dashboard/data.py: a widget conversation with
questions, answers, feedback, a note, a handoff, analytics events and question clusters) plus a second conversation
with its replay log in Redis and a daily answer counter. Every place is first checked to hold the visitor (so no check
below passes vacuously).
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.models import AuditEntry
from tests.analytics_dashboard.data import seed_workspace
from tests.factories import member
from tests.tenants.test_billing import workspace_on


def _schema_hits(schema: str, needles: list[str]) -> dict[str, int]:
    """{table: rows} of every table in the schema whose row text contains any needle."""
    hits: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                       "AND table_type = 'BASE TABLE' ORDER BY 1", [schema])
        for (table,) in cursor.fetchall():
            where = " OR ".join(["strpos(t::text, %s) > 0"] * len(needles))
            cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}" t WHERE {where}', needles)
            count = cursor.fetchone()[0]
            if count:
                hits[table] = count
    return hits


def _redis_hits(schema: str, needles: list[str]) -> list[bytes]:
    """Keys of the test Redis db naming the schema whose name or value contains a needle."""
    client = cache._cache.get_client(write=True)
    found = []
    for key in client.scan_iter(match=f"*{schema}*", count=1000):
        kind = client.type(key)
        if kind == b"stream":
            value = repr(client.xrange(key)).encode()
        elif kind == b"string":
            value = client.get(key) or b""
        elif kind == b"zset":
            value = repr(client.zrange(key, 0, -1)).encode()
        elif kind == b"hash":
            value = repr(client.hgetall(key)).encode()
        elif kind == b"list":
            value = repr(client.lrange(key, 0, -1)).encode()
        else:
            value = b""
        if any(n.encode() in key or n.encode() in value for n in needles):
            found.append(key)
    return found


def _file_hits(schema: str, needles: list[str]) -> list[str]:
    root = Path(settings.MEDIA_ROOT) / "workspaces" / schema
    return [str(path) for path in root.rglob("*") if path.is_file()
            and any(n.encode() in path.read_bytes() for n in needles)] if root.exists() else []


def _chroma_hits(schema: str, needles: list[str]) -> int:
    from documents.vectors import _store, vector_collection_name

    with _store.collection(vector_collection_name(schema)) as (_client, collection):
        if collection is None:
            return 0
        documents = collection.get(include=["documents", "metadatas"])
    text = json.dumps([documents.get("documents"), documents.get("metadatas")], default=str)
    return sum(text.count(n) for n in needles)


def _centroids_match_members() -> list[int]:
    """Clusters whose centroid is not the mean of their current members' embeddings (ids)."""
    from analytics.models import QuestionCluster
    from analytics.services import _unit
    from analytics.text import question_normalise
    from documents.embedding import embedder

    wrong = []
    for cluster in QuestionCluster.objects.prefetch_related("assignments"):
        texts = [a.text for a in cluster.assignments.all()]
        vectors = _unit(np.asarray(embedder().embed([question_normalise(t) for t in texts]), dtype=np.float32))
        expected = _unit(vectors.sum(axis=0)[None, :])[0]
        actual = np.frombuffer(bytes(cluster.centroid), dtype=np.float32)
        if cluster.size != len(texts) or not np.allclose(actual, expected, atol=1e-5):
            wrong.append(cluster.pk)
    return wrong


def _second_conversation(workspace, visitor_id: str, marker: str):
    """Another conversation of the visitor: a question waiting for an agent, its replay log and lock in Redis, and
    today's answer counter of the widget."""
    from chat import services as chat_services
    from chat.events import ConversationLog, sync_client
    from embeds.limits import _socket_key

    with tenant_context(workspace):
        conversation = chat_services.conversation_start(channel="widget", visitor_id=visitor_id,
                                                        visitor_email=f"{marker.lower()}@example.test")
        chat_services.customer_message_post(conversation=conversation, text=f"Second question {marker}?")
        log = ConversationLog.of(workspace.schema_name, conversation)
        log.append_sync([{"type": "message", "content": f"Second question {marker}?"}])
        sync_client().set(log.lock_key, "held", ex=600)
        sync_client().set(_socket_key(workspace.schema_name, "answers.visitor", visitor_id, 20000), 3, ex=600)
    return conversation


def test_erasing_a_visitor_leaves_nothing_of_them_and_spares_the_other_visitor(host_client):
    acme = workspace_on("starter")  # room for the two visitors' widgets
    schema = acme.workspace.schema_name
    gone = seed_workspace(acme.workspace, acme.owner, marker=f"GONE{secrets.token_hex(4)}")
    kept = seed_workspace(acme.workspace, acme.owner, marker=f"KEPT{secrets.token_hex(4)}")
    visitor_id = f"v-{gone.marker}"
    second = _second_conversation(acme.workspace, visitor_id, gone.marker)
    with tenant_context(acme.workspace):  # the lead form they filled in (chat.Lead, one per conversation)
        from chat.services import conversation_lead_save

        conversation_lead_save(conversation=second, stage="before_chat", custom_label="Order",
                               values={"name": f"Name {gone.marker}", "custom": gone.marker})
    needles = [gone.marker, visitor_id]

    # The visitor is everywhere first.
    hits = _schema_hits(schema, needles)
    for table in ("chat_conversation", "chat_message", "chat_lead", "analytics_event", "analytics_questionassignment",
                  "analytics_questioncluster"):
        assert hits.get(table), (table, hits)
    assert len(_redis_hits(schema, [second.public_id.hex])) == 3  # seq, log, lock
    with tenant_context(acme.workspace):
        from analytics.models import QuestionCluster

        clusters_before = QuestionCluster.objects.count()
    kept_before = _schema_hits(schema, [kept.marker])
    with tenant_context(acme.workspace):
        from chat.models import Message

        message_count = Message.objects.filter(conversation__visitor_id=visitor_id).count()
    assert message_count >= 8  # the seeded questions, answers, note and system lines, and the second question

    admin = member(acme.workspace, "admin")
    client = host_client(f"{acme.workspace.slug}.localhost")
    client.force_login(admin)
    response = client.delete(f"/api/v1/conversations/visitors/{visitor_id}/")
    assert response.status_code == 200, response.content
    assert response.json() == {"conversations": 2, "messages": message_count}

    # The seed names the team's widget after the marker ("Shop widget GONE…"): the workspace's, not the visitor's.
    assert {table: n for table, n in _schema_hits(schema, needles).items() if table != "embeds_embed"} == {}
    assert _redis_hits(schema, [*needles, second.public_id.hex, gone.conversation.public_id.hex]) == []
    from chat.events import sync_client
    from embeds.limits import _socket_key

    assert not sync_client().exists(_socket_key(schema, "answers.visitor", visitor_id, 20000))
    assert _file_hits(schema, needles) == []
    assert _chroma_hits(schema, needles) == 0
    with tenant_context(acme.workspace):
        assert _centroids_match_members() == []  # no centroid keeps the erased questions' vectors
        assert QuestionCluster.objects.count() <= clusters_before

    # The other visitor keeps everything. Clusters the two shared now show the other visitor's wording (their
    # representative was the erased visitor's, who asked first): more cluster rows carry the kept marker, not fewer.
    kept_after = _schema_hits(schema, [kept.marker])
    assert kept_after.pop("analytics_questioncluster", 0) > kept_before.pop("analytics_questioncluster", 0)
    assert kept_after == kept_before

    entry = AuditEntry.objects.get(workspace=acme.workspace, action="visitor.erased")
    assert entry.target == visitor_id and entry.actor == admin and entry.data["conversations"] == 2

    # Erasing again: nothing left to erase.
    again = client.delete(f"/api/v1/conversations/visitors/{visitor_id}/")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


def test_export_one_visitor_as_json_over_the_api_and_the_dashboard(host_client):
    acme = workspace_on("starter")
    seeded = seed_workspace(acme.workspace, acme.owner, marker=f"EXP{secrets.token_hex(4)}")
    other = seed_workspace(acme.workspace, acme.owner, marker=f"OTH{secrets.token_hex(4)}")
    visitor_id = f"v-{seeded.marker}"
    with tenant_context(acme.workspace):
        from chat.models import Lead

        Lead.objects.create(conversation=seeded.conversation, visitor_id=visitor_id, name="Ada",
                            email=f"ada-{seeded.marker.lower()}@example.test", stage="before_chat")
    client = host_client(f"{acme.workspace.slug}.localhost")
    client.force_login(acme.owner)

    response = client.get(f"/api/v1/conversations/visitors/{visitor_id}/export/")
    assert response.status_code == 200, response.content
    assert "attachment" in response["Content-Disposition"]
    document = response.json()
    assert document["visitor_id"] == visitor_id
    [conversation] = document["conversations"]
    assert conversation["id"] == str(seeded.conversation.public_id)
    contents = [m["content"] for m in conversation["messages"]]
    assert all(question in contents for question in seeded.questions)
    assert seeded.note_text not in contents  # internal notes are the team's, not the visitor's
    assert conversation["lead"]["name"] == "Ada" and conversation["lead"]["email"].startswith("ada-")
    assert other.marker not in json.dumps(document)

    page = client.get(f"/conversations/visitors/{visitor_id}/export/")
    assert page.status_code == 200 and json.loads(page.content)["conversations"][0]["id"] == conversation["id"]
    assert AuditEntry.objects.filter(workspace=acme.workspace, action="visitor.exported", target=visitor_id).count() == 2

    missing = client.get("/api/v1/conversations/visitors/v-nobody/export/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    too_long = client.get(f"/api/v1/conversations/visitors/{'x' * 65}/export/")
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid"


def test_only_owners_and_admins_export_or_erase_and_api_keys_cannot(host_client):
    from accounts.services import api_key_create

    acme = workspace_on("starter")
    seeded = seed_workspace(acme.workspace, acme.owner, marker=f"ROL{secrets.token_hex(4)}")
    visitor_id = f"v-{seeded.marker}"
    host = f"{acme.workspace.slug}.localhost"
    for role in ("agent", "viewer"):
        client = host_client(host)
        client.force_login(member(acme.workspace, role))
        assert client.get(f"/api/v1/conversations/visitors/{visitor_id}/export/").status_code == 403
        assert client.delete(f"/api/v1/conversations/visitors/{visitor_id}/").status_code == 403
        assert client.get(f"/conversations/visitors/{visitor_id}/").status_code == 403
        assert client.post(f"/conversations/visitors/{visitor_id}/", {"confirm": visitor_id}).status_code == 403
    _key, raw = api_key_create(workspace=acme.workspace, name="all scopes", scopes=["read", "write", "chat"])
    keyed = host_client(host, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert keyed.delete(f"/api/v1/conversations/visitors/{visitor_id}/").status_code == 403
    with tenant_context(acme.workspace):
        from chat.models import Conversation

        assert Conversation.objects.filter(visitor_id=visitor_id).count() == 1

    # The dashboard: the transcript links to the visitor's page; erasing needs the typed confirmation.
    owner = host_client(host)
    owner.force_login(acme.owner)
    transcript = owner.get(f"/conversations/{seeded.conversation.public_id}/").content.decode()
    assert f"/conversations/visitors/{visitor_id}/" in transcript
    page = owner.get(f"/conversations/visitors/{visitor_id}/")
    assert page.status_code == 200 and "Erase visitor" in page.content.decode()
    owner.post(f"/conversations/visitors/{visitor_id}/", {"confirm": "wrong"})
    with tenant_context(acme.workspace):
        assert Conversation.objects.filter(visitor_id=visitor_id).count() == 1
    done = owner.post(f"/conversations/visitors/{visitor_id}/", {"confirm": visitor_id})
    assert done.status_code == 302
    with tenant_context(acme.workspace):
        assert not Conversation.objects.filter(visitor_id=visitor_id).exists()
    assert AuditEntry.objects.get(workspace=acme.workspace, action="visitor.erased").actor == acme.owner


def test_a_verified_person_is_exported_and_erased_across_every_browser_they_used(host_client):
    """Identity verification ties conversations from several browsers (visitor ids) to one verified user of one
    widget: asking with any of those visitor ids exports and erases all of them — and nobody else's (another
    verified user, the same user id verified by ANOTHER widget (another site's user 42), an anonymous visitor)."""
    from chat import services
    from chat.models import Conversation
    from embeds.models import Embed
    from embeds.services import embed_create

    acme = workspace_on("starter")
    marker = secrets.token_hex(4)
    with tenant_context(acme.workspace):
        shop_widget = embed_create(name=f"shop {marker}", allowed_origins=["https://shop.example"])
        forum_widget = embed_create(name=f"forum {marker}", allowed_origins=["https://forum.example"])

        def start(visitor: str, verified: str, embed: Embed) -> Conversation:
            conversation = services.conversation_start(channel="widget", visitor_id=visitor, title=marker)
            Conversation.objects.filter(pk=conversation.pk).update(verified_user_id=verified, embed_id=embed.pk)
            services.customer_message_post(conversation=conversation, text=f"{visitor} {marker}")
            return conversation

        laptop = start(f"v-laptop-{marker}", f"user-{marker}", shop_widget)
        phone = start(f"v-phone-{marker}", f"user-{marker}", shop_widget)
        forum_namesake = start(f"v-forum-{marker}", f"user-{marker}", forum_widget)
        someone_else = start(f"v-else-{marker}", f"other-{marker}", shop_widget)
        anonymous = start(f"v-anon-{marker}", "", shop_widget)
    client = host_client(f"{acme.workspace.slug}.localhost")
    client.force_login(acme.owner)

    document = client.get(f"/api/v1/conversations/visitors/v-phone-{marker}/export/").json()
    assert {c["id"] for c in document["conversations"]} == {str(laptop.public_id), str(phone.public_id)}

    erased = client.delete(f"/api/v1/conversations/visitors/v-laptop-{marker}/")
    assert erased.status_code == 200, erased.content
    assert erased.json()["conversations"] == 2
    with tenant_context(acme.workspace):
        left = set(Conversation.objects.filter(title=marker).values_list("public_id", flat=True))
    assert left == {forum_namesake.public_id, someone_else.public_id, anonymous.public_id}
