"""A new customer's first minutes (issue #20): a fresh workspace with one short text of three sentences answers the
direct question about each sentence, cites that text and quotes the fact, and declines questions about the same
business that the text doesn't answer. Real ingestion pipeline (parse → chunk → embed → Chroma + full text) and the
real answer path; several generated variants, because whether a question was answered used to depend on the digits.
"""
from __future__ import annotations

import random

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from chat.answering import answer_once
from tests.chat.knowledge import knowledge_workspace

WORDINGS = [
    ("The returns window for store number {n} is {r} days. Shipping from warehouse {n} takes {s} business days. "
     "Gift cards bought at store {n} never expire."),
    ("Returns are accepted within {r} days at store {n}. Orders from warehouse {n} ship in {s} business days. "
     "Gift cards from store {n} never expire."),
    # "window" is a word this text never uses: "How long" asking for a duration finds "{r} days" (answer types).
    ("Store {n} gives you {r} days to return an item. Warehouse {n} needs {s} business days to ship an order. "
     "Gift cards bought at store {n} never expire."),
]
DIRECT = [
    ("How long is the returns window?", "r"),
    ("How long does shipping take?", "s"),
    ("Do gift cards expire?", "never"),
]
OUT_OF_SCOPE = ["Do you ship to Canada?", "Do you accept PayPal?", "What is the capital of France?"]


def variants(count: int = 12) -> list[dict]:
    rng = random.Random(20)
    out = []
    for index in range(count):
        values = {"n": rng.randint(2, 99), "r": rng.choice([14, 21, 30, 45, 60, 90]), "s": rng.randint(2, 9)}
        out.append({"values": values, "text": WORDINGS[index % len(WORDINGS)].format(**values),
                    "title": f"Store policies {index}"})
    return out


@pytest.fixture(scope="module")
def small_workspaces(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return [(variant, knowledge_workspace(f"First minutes {i}", {variant["title"]: variant["text"]}))
                for i, variant in enumerate(variants())]


def test_direct_question_about_each_sentence_is_answered_with_its_fact(small_workspaces):
    failures = []
    for variant, created in small_workspaces:
        connection.set_tenant(created.workspace)
        try:
            for question, key in DIRECT:
                expected = str(variant["values"][key]) if key in variant["values"] else key
                done = answer_once(question=question, history=[])
                titles = [citation["title"] for citation in done["citations"]]
                if not (done["answered"] and titles[:1] == [variant["title"]] and expected in done["answer"]):
                    failures.append((variant["text"], question, done["reason"], titles, done["answer"][:120]))
        finally:
            connection.set_schema_to_public()
    assert failures == [], "\n".join(map(repr, failures))


def test_questions_the_text_does_not_answer_are_declined(small_workspaces):
    answered = []
    for variant, created in small_workspaces:
        connection.set_tenant(created.workspace)
        try:
            for question in OUT_OF_SCOPE:
                done = answer_once(question=question, history=[])
                if done["answered"] or done["citations"]:
                    answered.append((variant["text"], question, done["answer"][:120]))
        finally:
            connection.set_schema_to_public()
    assert answered == [], "\n".join(map(repr, answered))


# --- the third pass (docs/answers.md, "Small knowledge bases, third pass"): mechanisms found on the probe sample ----

THIRD_PASS_DOCS = {
    # Times of day as shops write them ("9 in the morning", "10am–2pm", "a.m."), days abbreviated ("Sat"), the
    # working week in words ("During the week").
    "Weekday hours": "During the week we are here from 9 in the morning until 6 in the evening.",
    "Weekend": "Sat: 10am–2pm\nSunday closed. On Saturday the café opens at 10 a.m. and closes at 2 p.m.",
    # A FAQ whose question lines have no "Q:" and answers no "A:"; a label over a line ("Gift cards").
    "FAQ": ("When will my order arrive?\nUsually within 4 business days.\n\nHow do I reach you?\n"
            "Drop us a line at hello@maplebikes.example and we'll get back to you.\n\nGift cards\n"
            "Gift vouchers never expire"),
    # The shop says "shipping" and "no charge"; customers ask about "delivery" being "free".
    "Shipping": "We are a family-run bike shop in Madison. No shipping charge once your basket reaches $80.",
}


@pytest.fixture(scope="module")
def third_pass_workspace(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return knowledge_workspace("Third pass shop", THIRD_PASS_DOCS)


def _answers(created, questions):
    connection.set_tenant(created.workspace)
    try:
        return {question: answer_once(question=question, history=[]) for question in questions}
    finally:
        connection.set_schema_to_public()


def _first_source_misses(created, expected):
    """(question, reason, titles, answer) for each question not answered with `expected[question]` cited first and
    its value (the second item) in the answer."""
    done = _answers(created, list(expected))
    misses = []
    for question, (title, value) in expected.items():
        data = done[question]
        titles = [citation["title"] for citation in data["citations"]]
        if not (data["answered"] and titles[:1] == [title] and value in data["answer"]):
            misses.append((question, data["reason"], titles, data["answer"][:120]))
    return misses


def test_opening_hours_written_in_words_and_days_answer_the_day_asked_about(third_pass_workspace):
    # "9 a.m." no longer ends a sentence nor reads as code, "9 in the morning" and "10am–2pm" are times, "Sat" and
    # "During the week" are days: the weekday question quotes the weekday hours, the weekend question the weekend.
    misses = _first_source_misses(third_pass_workspace, {
        "how late are you open": ("Weekday hours", "6 in the evening"),
        "what time do you close on weekdays": ("Weekday hours", "6 in the evening"),
        "Saturday hours?": ("Weekend", "10"),
        "can i stop by on the weekend": ("Weekend", "10"),
    })
    assert misses == [], "\n".join(map(repr, misses))


def test_faq_question_lines_keep_their_answers_and_contact_questions_find_the_address(third_pass_workspace):
    # "What's" and "something" are no content words, "e-mail" is "email", "get in touch" and "support" ask for an
    # address or a number, "when does ... arrive" for a duration: a FAQ line's answer on the next line answers.
    misses = _first_source_misses(third_pass_workspace, {
        "what's your e-mail": ("FAQ", "hello@maplebikes.example"),
        "Is there an email address for support?": ("FAQ", "hello@maplebikes.example"),
        "how can i get in touch": ("FAQ", "hello@maplebikes.example"),
        "when does my order arrive": ("FAQ", "4 business days"),
    })
    assert misses == [], "\n".join(map(repr, misses))


def test_a_question_word_said_in_another_word_counts_as_found(third_pass_workspace):
    # "delivery" / "shipping" (near words by the embedding model's word vectors), "free" / "no ... charge".
    misses = _first_source_misses(third_pass_workspace, {
        "is delivery free": ("Shipping", "$80"),
    })
    assert misses == [], "\n".join(map(repr, misses))


def test_labels_and_places_the_text_never_mentions_do_not_answer(third_pass_workspace):
    # "Gift cards" over a line is a label, not a sentence close to "rewards card"; "Boston" is a place the texts
    # never mention, near a short chunk only because it is short.
    done = _answers(third_pass_workspace, ["Do you have a rewards card?", "Do you have a store in Boston?"])
    answered = [(question, data["answer"][:120]) for question, data in done.items()
                if data["answered"] or data["citations"]]
    assert answered == [], "\n".join(map(repr, answered))


def test_a_capitalised_function_word_after_pasted_markup_is_not_an_unknown_name(django_db_blocker):
    # "How" after "</script> " is not at a sentence start: read as a name, it has no stem, and was declined as one
    # the knowledge base never uses (tests/embeds/test_widget_browser.py's XSS question caught it).
    with django_db_blocker.unblock():
        ws = knowledge_workspace("Markup question", {"Shipping times": (
            "# Shipping times\n\nOrders placed before 2 p.m. ship the same working day. Standard delivery takes two "
            "to four working days; express delivery arrives the next working day.\n")})
    question = "<img src=x onerror=\"alert('q')\"><script>alert('q2')</script> How long does standard delivery take?"
    with tenant_context(ws.workspace):
        done = answer_once(question=question, history=[])
    assert done["answered"] and "working days" in done["answer"], done
