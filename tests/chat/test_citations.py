"""Citations the customer can use (issue #15 item 6): up to 5 sources, best first — the quoted ones in the order of
their [n] markers, then supporting ones —, `quoted` matching the markers, markers renumbered while a model's answer
streams, the page URL of a web-imported document (+ its heading's anchor), the passage link for staff, and nothing
internal for visitors. On a real knowledge base; LLM vendors are real HTTP servers on loopback (tests/chat/fakes)."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from chat.answering import answer_stream
from chat.citations import CITATIONS_LIMIT, CitationMarkers, citations_build
from chat.models import AssistantSettings
from chat.providers.base import provider_config_parse
from chat.providers.breaker import breaker_reset
from documents.retrieval import RetrievedChunk
from embeds.selectors import visitor_citations, visitor_event_redact, visitor_message_payload
from tests.chat.fakes import FakeVendor, Reply
from tests.chat.knowledge import ROUTER_DOCS, knowledge_workspace
from tests.documents.website import Website, page

MARKER = re.compile(r"\[(\d+)\]")
MULTI_PART = "How long do I have to get a refund, and how do I update the firmware?"


@pytest.fixture(scope="module")
def kb(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return knowledge_workspace("Citations KB", ROUTER_DOCS)


@pytest.fixture
def in_kb(kb):
    connection.set_tenant(kb.workspace)
    yield kb
    connection.set_schema_to_public()


@pytest.fixture
def vendor():
    started: list[FakeVendor] = []

    def make(*replies: Reply) -> AssistantSettings:
        fake = FakeVendor("openai", list(replies))
        started.append(fake)
        entry = {"kind": "openai", "base_url": fake.base_url, "api_key": "k", "first_token_timeout": 2,
                 "inter_token_timeout": 1, "model": "gpt-4o-mini"}
        breaker_reset(provider_key=provider_config_parse(entry).key)
        return AssistantSettings(providers=[entry])

    yield make
    for fake in started:
        fake.close()


def run(**kwargs):
    events = list(answer_stream(**kwargs))
    last_reset = max((i for i, e in enumerate(events) if e.type == "reset"), default=-1)
    streamed = "".join(e.data["text"] for e in events[last_reset + 1:] if e.type == "token")
    sources = next(e.data["sources"] for e in events if e.type == "tool_completed")
    return events[-1].data, streamed, sources


def markers_in(text: str) -> list[int]:
    """The distinct marker numbers of a text, in the order they first appear."""
    return list(dict.fromkeys(int(n) for n in MARKER.findall(text)))


# --- the order and the flags, end to end ----------------------------------------------------------------------------


def test_builtin_answer_quoted_sources_first_then_supporting_ones(in_kb):
    done, streamed, sources = run(question="How do I reset my router to factory settings?", history=[])
    citations = done["citations"]
    assert streamed == done["answer"]
    quoted = [c for c in citations if c["quoted"]]
    assert quoted and citations[:len(quoted)] == quoted
    assert markers_in(done["answer"]) == list(range(1, len(quoted) + 1))  # [1] is citations[0], ...
    assert citations[0]["title"] == "Resetting the router" and citations[0]["section"] == "Factory reset"
    # More than the one quoted source: the others retrieval found close to the question, never a repeat.
    supporting = citations[len(quoted):]
    assert supporting and len(citations) <= CITATIONS_LIMIT
    assert len({c["chunk_id"] for c in citations}) == len(citations)
    assert {c["chunk_id"] for c in citations} <= {s["chunk_id"] for s in sources}
    # The supporting ones keep retrieval's order (best first).
    rank = {s["chunk_id"]: i for i, s in enumerate(sources)}
    assert [rank[c["chunk_id"]] for c in supporting] == sorted(rank[c["chunk_id"]] for c in supporting)
    # A retrieved source far from the question (cosine under the coverage threshold) is not offered.
    from documents.retrieval import DEFAULT_PARAMS

    left_out = [s for s in sources if s["chunk_id"] not in {c["chunk_id"] for c in citations}]
    assert left_out and all(s["score"] < DEFAULT_PARAMS.cover_threshold for s in left_out)


def test_multi_part_answer_cites_each_part_in_marker_order(in_kb):
    done, streamed, _sources = run(question=MULTI_PART, history=[])
    citations = done["citations"]
    quoted = [c["title"] for c in citations if c["quoted"]]
    assert streamed == done["answer"] and 2 <= len(citations) <= CITATIONS_LIMIT
    assert quoted[:2] == ["Billing and refunds", "Firmware updates"]  # the parts' order, as the markers run
    assert markers_in(done["answer"]) == list(range(1, len(quoted) + 1))


def test_model_markers_are_renumbered_as_they_stream_and_its_sources_reordered(in_kb, vendor):
    # The model cites the third source first, then the first; the marker arrives split over three tokens.
    assistant = vendor(Reply(pieces=["Check the ", "firmware [", "3", "]. Then reset it [1][3]. Use ",
                                     "`cfg[2]` as is [9]."]))
    done, streamed, sources = run(question="How do I reset my router to factory settings?", history=[],
                                  assistant=assistant)
    assert done["provider"] == "openai:gpt-4o-mini"
    assert streamed == done["answer"] == "Check the firmware [1]. Then reset it [2][1]. Use `cfg[2]` as is ."
    citations = done["citations"]
    assert [c["chunk_id"] for c in citations[:2]] == [sources[2]["chunk_id"], sources[0]["chunk_id"]]
    assert [c["quoted"] for c in citations[:2]] == [True, True]
    assert all(c["quoted"] is False for c in citations[2:]) and len(citations) <= CITATIONS_LIMIT


def test_a_model_citing_more_sources_than_shown_keeps_the_first_five(in_kb, vendor):
    assistant = vendor(Reply(text="x"))  # a first call only to read how many sources the prompt gives
    _done, _streamed, sources = run(question=MULTI_PART, history=[], assistant=assistant)
    count = len(sources)
    assert count > CITATIONS_LIMIT, "a multi-part question gives the model more sources than are shown"
    text = " ".join(f"Fact [{n}]." for n in range(count, 0, -1))  # every source, the last one first
    done, streamed, sources = run(question=MULTI_PART, history=[], assistant=vendor(Reply(text=text)))
    citations = done["citations"]
    assert len(citations) == CITATIONS_LIMIT and all(c["quoted"] for c in citations)
    assert [c["chunk_id"] for c in citations] == [s["chunk_id"] for s in sources[::-1][:CITATIONS_LIMIT]]
    assert streamed == done["answer"] and markers_in(done["answer"]) == list(range(1, CITATIONS_LIMIT + 1))
    assert done["answer"].count("Fact .") == count - CITATIONS_LIMIT  # the rest lose their marker, not their text


def test_a_model_that_cites_nothing_shows_supporting_sources_only(in_kb, vendor):
    done, _streamed, sources = run(question="How do I reset my router to factory settings?", history=[],
                                   assistant=vendor(Reply(text="Hold the Reset button for ten seconds.")))
    assert done["citations"] and all(c["quoted"] is False for c in done["citations"])
    assert done["citations"][0]["chunk_id"] == sources[0]["chunk_id"]


# --- the pieces ------------------------------------------------------------------------------------------------------


def test_markers_renumber_by_first_appearance_across_tokens():
    markers = CitationMarkers(sources=4, limit=2)
    out = "".join(markers.feed(piece) for piece in ["A [", "4", "] B [2, 4", "] C [3] D [", "5] [0] `x[1]` [1"])
    out += markers.flush()
    # [3] is past the limit, [5] and [0] name no source: dropped; code stays code; an unfinished "[1" is text.
    assert out == "A [1] B [2][1] C  D   `x[1]` [1" and markers.order == [4, 2]
    assert markers.text == out


def test_builtin_markers_count_only_at_a_line_end():
    markers = CitationMarkers(sources=None, line_end=True)
    out = markers.feed("A footnote [2] stays. First [") + markers.feed("2]\n\nSecond [1]") + markers.flush()
    assert out == "A footnote [2] stays. First [1]\n\nSecond [2]" and markers.order == [2, 1]


def chunk(chunk_id: int, document_id: int, section: str, text: str, cosine: float = 0.6) -> RetrievedChunk:
    return RetrievedChunk(chunk_id=chunk_id, document_id=document_id, ordinal=chunk_id, title=f"Doc {document_id}",
                          filename="", section=section, page=None, text=text, dense_score=cosine)


def test_supporting_sources_prefer_other_documents_and_skip_near_duplicates(in_kb):
    words = " ".join(f"word{i}" for i in range(40))
    sources = [
        chunk(1, 1, "A", "The reset button is on the back. " + words),
        chunk(2, 1, "A", "The reset button is on the back. " + words + " again"),  # a near-duplicate of 1
        chunk(3, 1, "A", "Hold it for ten seconds until the light blinks."),  # same section as the quoted one
        chunk(4, 2, "B", "Firmware updates run at night."),
        chunk(5, 3, "C", "Unrelated text about billing.", cosine=0.1),  # not close to the question
        chunk(6, 1, "D", "Another section of the same document."),
    ]
    citations = citations_build(sources=sources, quoted=[0], limit=3)
    assert [c["chunk_id"] for c in citations] == [1, 4, 6]  # another document, then another section
    assert [c["quoted"] for c in citations] == [True, False, False]
    everything = citations_build(sources=sources, quoted=[3, 0])
    assert [c["chunk_id"] for c in everything] == [4, 1, 3, 6]  # no duplicate of 1, nothing far from the question
    assert everything[0]["dashboard_url"] == "/knowledge/2/?chunk=4#chunk-4"


# --- visitors -------------------------------------------------------------------------------------------------------


def test_visitors_see_quoted_and_the_page_url_but_nothing_internal(in_kb):
    done, _streamed, _sources = run(question="How do I reset my router to factory settings?", history=[])
    full = done["citations"]
    assert all(c["dashboard_url"] and c["chunk_id"] for c in full)
    shown = visitor_citations(full, show_sources=True)
    assert [set(c) for c in shown] == [{"title", "section", "page", "url", "snippet", "quoted"}] * len(full)
    assert [c["quoted"] for c in shown] == [c["quoted"] for c in full]
    message = visitor_message_payload({"id": 1, "role": "assistant", "content": done["answer"], "citations": full,
                                       "provider": "builtin", "confidence": 0.9}, show_sources=True)
    event = visitor_event_redact({"type": "tool_completed", "sources": full}, show_sources=True)
    for payload in (message, event):
        text = repr(payload)
        for internal in ("dashboard_url", "chunk_id", "document_id", "score", "filename", "/knowledge/"):
            assert internal not in text, internal
    assert visitor_citations(full, show_sources=False) == []


# --- a page imported from the web -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site():
    website = Website()
    yield website
    website.close()


def test_a_web_imported_page_is_cited_with_its_url_and_heading_anchor(kb, site, settings):
    from documents import services
    from tests.factories import document_ingest_now

    site.put("/help/pickup.html", page(
        "Store pickup",
        ("pickup-hours", "Pickup hours", "Orders can be picked up at the Lindenstrasse store from Monday to Friday "
                                         "between 10:00 and 18:00; bring the order number and an ID."),
        ("pickup-fees", "Pickup fees", "Store pickup is free of charge for every order, whatever its size."),
    ))
    url = site.url("/help/pickup.html")
    connection.set_tenant(kb.workspace)
    try:
        # Loopback is allowed for this test's page only; the job goes to a queue no worker reads: run here.
        with override_settings(URL_IMPORT_ALLOWED_NETWORKS=["127.0.0.1/32"], DOCUMENT_QUEUE="nobody_citations"):
            document = services.document_import_url(url=url)
            assert document_ingest_now(document) == "indexed"
        done, _streamed, _sources = run(question="When can I pick up my order at the Lindenstrasse store?",
                                        history=[])
        first = done["citations"][0]
        assert done["answered"] is True and first["quoted"] is True and first["document_id"] == document.pk
        assert first["url"] == f"{url}#pickup-hours"
        dashboard_url = first["dashboard_url"]
        # The same answer in a conversation, as staff read it in the dashboard.
        from chat import services as chat_services

        conversation = chat_services.conversation_start(created_by=kb.owner)
        answered = chat_services.conversation_message_answer(
            conversation=conversation, text="When can I pick up my order at the Lindenstrasse store?")
        assert answered.answer is not None and answered.answer.citations[0]["dashboard_url"] == dashboard_url
    finally:
        connection.set_schema_to_public()

    # The passage link: the document's page in the dashboard, showing and marking that chunk — for staff only.
    path, _, anchor = dashboard_url.partition("#")
    ordinal = int(anchor.removeprefix("chunk-"))
    assert path == f"/knowledge/{document.pk}/?chunk={ordinal}"
    staff = Client(HTTP_HOST=kb.host)
    staff.force_login(kb.owner)
    response = staff.get(path)
    assert response.status_code == 200
    assert f'<li id="chunk-{ordinal}" class="chunk-cited" aria-current="true">' in response.content.decode()
    anonymous = Client(HTTP_HOST=kb.host).get(path)
    assert anonymous.status_code in (302, 403) and b"chunk-cited" not in anonymous.content

    # The conversation view links each source to its passage, marks the quoted one, and links the web page.
    transcript = staff.get(f"/conversations/{conversation.public_id}/").content.decode()
    source = re.search(r'<li data-title="Store pickup" class="msg-source msg-source-quoted">(.*?)</li>', transcript,
                       re.DOTALL)
    assert source, transcript
    assert f'<a href="{dashboard_url.replace("&", "&amp;")}"' in source.group(1) or \
        f'<a href="{dashboard_url}"' in source.group(1)
    assert '<span class="msg-source-tag">quoted</span>' in source.group(1)
    assert f'<a href="{url}#pickup-hours" target="_blank" rel="noopener noreferrer nofollow">web page</a>' \
        in source.group(1)
