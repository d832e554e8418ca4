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
from tests.factories import WorkspaceWithOwner

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


# --- the fourth pass (docs/answers.md, "Small knowledge bases, fourth pass"): mechanisms found on probe seed 11 ------
# Each workspace is laid out as the probe's were (several facts in one short chunk, notice-board lines, labels over
# lines): on separate one-fact documents the chunk rule answers without any of these mechanisms.

FOURTH_PASS_SHOPS = {
    "prose": {"Read me": (
        "During the week we are here from 7 in the morning until 5 in the evening. For anything else, message "
        "hello@northsidecoffee.example. Your parcel should arrive 10 business days after you order. Gift "
        "certificates never expire and work in store and online. Give us a ring on (234) 555-1348 between 10am and "
        "5pm on weekdays. Changed your mind? Bring it back within 14 days. On Saturday we open at 9 a.m. and close "
        "at 3 p.m.")},
    "phone line": {
        "Hello": "- Bag of dog food .......... $135.00\n- Dispatch: within 6 business days\n"
                 "- Phone: (373) 555-9118 (Mon–Fri, 9am–5pm)",
        "Read me": "Hours:\nWeekdays 7:00 – 5:00 pm",
        "Shop info": "- Free delivery on orders of $40+\n- Gift vouchers never expire\n- Saturday 9–1, Sunday closed"},
    "call line": {
        "Before you buy": "- Return period: 60 days\n- Guarantee: 3 years on the pour-over kettle, parts and labour\n"
                          "- Free delivery on orders of $40+\n- Mon–Fri: 9am–5pm",
        "Store details": "When will my order arrive?\nUsually within 6 business days.",
        "Read me": "- Call (912) 555-7491, weekdays 10–4\n- Gift vouchers never expire\n- Contact: hello@maple.example"},
    "contact block": {
        "FAQ and policies": "Follow us for new arrivals.\n- Free shipping from $60\n- Cat tree – $79\n"
                            "- Mon–Fri: 8am–5pm\n- Gift vouchers never expire\n- Bag of dog food: 2 years warranty",
        "Shop info": "Contact\nCall (690) 555-9912, weekdays 9–5\nContact: hello@pinehill.example\n\nShipping\n"
                     "Delivery time: 1 business day"},
    "hours block": {
        "FAQ and policies": "Returns & refunds\nReturns accepted within 30 days (receipt required)\n\nHours:\n"
                            "Weekdays 7:00 – 6:00 pm",
        "Read me": "Saturday 10–5, Sunday closed",
        "Visiting us": "How do I reach you?\nFor anything else, message hello@littleowl.example."},
    "dispatch": {
        "Customer service": "Shipping\nDispatch: within 1 business day\n\nGift cards\nGift vouchers never expire\n\n"
                            "Hours:\nSat: 8am–3pm",
        "Visiting us": "We sell a digital piano for $15.95. Orders above $80 ship for free."},
    "dispatch list": {
        "Visiting us": "We sell a digital piano for $15.95. Orders above $80 ship for free.",
        "Help": "We have been in Salem for over ten years.\n- Contact: hello@oakivy.example",
        "Store details": "- Guarantee: 1 year on the acoustic guitar, parts and labour\n- Dispatch: within 10 business days"},
    # Read on probe seed 17.
    "returns block": {
        "Help": "If your digital piano breaks within 2 years, we repair or replace it for free.",
        "Hello": "Our team loves helping you find the right thing. Gift certificates never expire and work in store and "
                 "online. Orders above $80 ship for free. Drop us a line at hello@willow.example and we'll get back to "
                 "you.",
        "Customer service": "Returns & refunds\nReturns accepted within 14 days (receipt required)\n\nHours:\n"
                            "Weekdays 7:00 – 7:00 pm"},
    "gift label": {
        "Read me": "How do I reach you?\nFor anything else, message hello@lakeview.example.",
        "Before you buy": "Gift cards\nGift vouchers never expire",
        "FAQ and policies": "Can I call you?\nPhone: (523) 555-5005 (Mon–Fri, 8am–4pm)\n\nHow much do you charge for a "
                            "sourdough loaf?\n$79, tax included."},
    "price list": {"Before you buy": (
        "Thanks for shopping local!\n- Free shipping from $120\n- E-mail us: hello@sunny.example\n"
        "- Delivery time: 5 business days\n- Acoustic guitar .......... $79\n- Phone: (444) 555-8202 (Mon–Fri, "
        "8am–7pm)\n- Guarantee: 2 years on the acoustic guitar, parts and labour\n- Gift vouchers never expire")},
}


def shops_made(django_db_blocker, title: str, layouts: dict[str, dict[str, str]]) -> dict[str, WorkspaceWithOwner]:
    """One workspace per layout (its documents by title), named after the pass that read them."""
    with django_db_blocker.unblock():
        return {name: knowledge_workspace(f"{title} {name}", documents) for name, documents in layouts.items()}


@pytest.fixture(scope="module")
def fourth_pass_shops(django_db_setup, django_db_blocker):
    return shops_made(django_db_blocker, "Fourth pass", FOURTH_PASS_SHOPS)


def test_phrases_are_read_as_their_word(fourth_pass_shops):
    # "Bring it back" says "return"; "pick up the phone" asks about the phone.
    misses = _first_source_misses(fourth_pass_shops["prose"], {
        "Is there a time limit on returns?": ("Read me", "14 days")})
    misses += _first_source_misses(fourth_pass_shops["contact block"], {
        "when does customer service pick up the phone": ("Shop info", "555-9912")})
    assert misses == [], "\n".join(map(repr, misses))


def test_store_hours_are_not_the_phone_lines_hours(fourth_pass_shops):
    # A question about when the shop is open quotes the shop's hours, not the times next to a phone number; "Store
    # hours?" asks with "store" (a shop's texts rarely call it one).
    misses = _first_source_misses(fourth_pass_shops["phone line"], {"how late are you open": ("Read me", "5:00 pm")})
    misses += _first_source_misses(fourth_pass_shops["call line"], {
        "what time do you close on weekdays": ("Before you buy", "5pm")})
    misses += _first_source_misses(fourth_pass_shops["hours block"], {
        "Store hours?": ("FAQ and policies", "7:00")})
    assert misses == [], "\n".join(map(repr, misses))


def test_the_thing_delivered_is_asked_with_a_delivery_time(fourth_pass_shops):
    # "order" and "package" are words these texts never use: a delivery time answers however it names the thing.
    misses = _first_source_misses(fourth_pass_shops["dispatch"], {
        "How long until I get my order?": ("Customer service", "1 business day")})
    misses += _first_source_misses(fourth_pass_shops["dispatch list"], {
        "when does my package arrive": ("Store details", "10 business days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_typos_after_a_one_letter_prefix_and_in_function_words_are_corrected(fourth_pass_shops):
    misses = _first_source_misses(fourth_pass_shops["prose"], {
        "what's your e-amil": ("Read me", "hello@northsidecoffee.example")})
    misses += _first_source_misses(fourth_pass_shops["price list"], {
        "whta's your e-mail": ("Before you buy", "hello@sunny.example")})
    assert misses == [], "\n".join(map(repr, misses))


def test_a_time_ago_asks_for_a_period(fourth_pass_shops):
    # "something I bought last week": is it still within the returns period? "Returns accepted within 14 days".
    misses = _first_source_misses(fourth_pass_shops["returns block"], {
        "can i bring back something i bought last week": ("Customer service", "14 days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_the_last_line_of_a_short_text_is_quoted_not_dropped_as_a_heading(fourth_pass_shops):
    # "Gift vouchers never expire" has no full stop and no value: the built-in answerer dropped it as a heading and
    # quoted the phone line of another document first.
    misses = _first_source_misses(fourth_pass_shops["gift label"], {
        "when does a gift card expire": ("Before you buy", "never expire")})
    assert misses == [], "\n".join(map(repr, misses))


def test_a_delivery_time_does_not_answer_other_questions_about_orders(fourth_pass_shops):
    # The thing delivered counts only when a delivery time is asked for: cancelling or paying is another question.
    done = _answers(fourth_pass_shops["dispatch"], ["Can I cancel my order?", "Do you accept PayPal?"])
    answered = [(question, data["answer"][:120]) for question, data in done.items()
                if data["answered"] or data["citations"]]
    assert answered == [], "\n".join(map(repr, answered))


# --- the fifth pass (docs/answers.md, "Small knowledge bases, fifth pass"): mechanisms found on probe seeds 23, 29 --

FIFTH_PASS_SHOPS = {
    # Read on probe seed 23.
    "warranty block": {
        "Shop info": "We are a family-run coffee roaster in Salem. We sell a pour-over kettle for $42.95. On Saturday "
                     "we open at 10 a.m. and close at 5 p.m.",
        "Hello": "Contact\nE-mail us: hello@oldmill.example\n\nWarranty\nGuarantee: 3 years on the pour-over kettle, "
                 "parts and labour",
        "Read me": "Our team loves helping you find the right thing.\n- Call (264) 555-3288, weekdays 10–4\n"
                   "- Returns accepted within 28 days (receipt required)",
        "Store details": "We have been in Salem for over ten years.\n- Weekdays 7:00 – 6:00 pm\n"
                         "- Free shipping from $120"},
    "one paragraph": {"Visiting us": (
        "Our phone line ((470) 555-3396) is staffed from 9 am to 4 pm on business days. The wedding centerpiece is "
        "covered by our 10-year guarantee. No shipping charge once your basket reaches $99. Doors open at 9 a.m. and "
        "close at 7 p.m., Monday through Friday. An orchid in a pot is $55. Your parcel should arrive 1 business day "
        "after you order. Changed your mind? Bring it back within 28 days.")},
    "order lines": {"Help": "Shipping\nFree delivery on orders of $120+\n\nContact\nE-mail us: hello@copper.example\n\n"
                            "Returns & refunds\nReturns accepted within 10 days (receipt required)"},
    # Read on probe seed 29.
    "dispatch line": {
        "Our policies": "- Pair of running shoes .......... $55",
        "FAQ and policies": "Do you charge for shipping?\nIt's free on orders over $60.",
        "Read me": "- Dispatch: within 10 business days",
        "Store details": "We are a family-run shoe store in Salem. Gift certificates never expire and work in store "
                         "and online. We take returns for up to 7 days after purchase."},
    "faq and blocks": {
        "Customer service": "What if my cat tree stops working?\nIt is under warranty for 1 year.\n\nDo you charge for "
                            "shipping?\nIt's free on orders over $120.\n\nHow much do you charge for an orthopedic dog "
                            "bed?\n$79, tax included.\n\nCan I call you?\nCall (384) 555-2831, weekdays 10–7",
        "Shop info": "Shipping\nDelivery time: 3 business days\n\nGift cards\nGift vouchers never expire\n\nHours:\n"
                     "Weekdays 7:00 – 6:00 pm",
        "Visiting us": "Returns & refunds\nReturns accepted within 14 days (receipt required)"},
    "notice board": {"Help": (
        "Sat: 9am–5pm\nGive us a ring on (860) 555-6322 between 8am and 7pm on weekdays.\nNo shipping charge once your "
        "basket reaches $120.\nYour parcel should arrive 6 business days after you order.\nReturn period: 14 days")},
}


@pytest.fixture(scope="module")
def fifth_pass_shops(django_db_setup, django_db_blocker):
    return shops_made(django_db_blocker, "Fifth pass", FIFTH_PASS_SHOPS)


def test_something_broken_and_covered_asks_for_the_warranty(fifth_pass_shops):
    # "broke", "is it covered": the guarantee line answers, not the price line that names the same kettle.
    misses = _first_source_misses(fifth_pass_shops["warranty block"], {
        "my pour-over kettle broke, is it covered?": ("Hello", "3 years")})
    assert misses == [], "\n".join(map(repr, misses))


def test_a_generic_noun_the_texts_never_use_is_not_asked_for(fifth_pass_shops):
    # "policy": the shop never writes it; "Bring it back within 28 days" is its return policy.
    misses = _first_source_misses(fifth_pass_shops["one paragraph"], {
        "what's the return policy": ("Visiting us", "28 days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_how_many_days_until_delivery_is_a_delivery_time_not_a_returns_period(fifth_pass_shops):
    misses = _first_source_misses(fifth_pass_shops["dispatch line"], {
        "How many days does delivery take?": ("Read me", "10 business days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_what_to_do_in_a_word_the_texts_never_use_is_declined(fifth_pass_shops):
    # "track", "cancel": the texts speak of orders, never of doing that to one.
    done = _answers(fifth_pass_shops["notice board"], ["How do I track my order?", "Can I cancel my order?"])
    done |= _answers(fifth_pass_shops["order lines"], ["Can I cancel my order?", "How do I track my order?"])
    answered = [(question, data["answer"][:120]) for question, data in done.items()
                if data["answered"] or data["citations"]]
    # What the customer asks to do in the texts' own words, or in a phrase for them, is still answered.
    misses = _first_source_misses(fifth_pass_shops["notice board"], {
        "can i bring back something i bought last week": ("Help", "14 days"),
        "Can I return an item?": ("Help", "14 days"),
        "Can I call you?": ("Help", "555-6322")})
    misses += _first_source_misses(fifth_pass_shops["order lines"], {"How can I reach you?": ("Help", "hello@")})
    assert answered == [] and misses == [], "\n".join(map(repr, answered + misses))


# Read off wordings written for this pass (not the probe's templates), asked on the seed-23 and seed-29 workspaces.

def test_a_refund_is_asked_of_the_returns_policy(fifth_pass_shops):
    # "refund", "my money back": the shop writes "Bring it back within 28 days"; "refund" and "returns" are 0.51 apart
    # as word vectors, under the near-word line.
    misses = _first_source_misses(fifth_pass_shops["one paragraph"], {
        "Can I get a refund?": ("Visiting us", "28 days"),
        "Can I get my money back?": ("Visiting us", "28 days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_a_delivery_time_is_asked_without_naming_the_order(fifth_pass_shops):
    # "get here", "receive": a delivery time, not "We take returns for up to 7 days" (which says "take").
    misses = _first_source_misses(fifth_pass_shops["dispatch line"], {
        "How long will it take to get here?": ("Read me", "10 business days"),
        "When will I receive my order?": ("Read me", "10 business days")})
    assert misses == [], "\n".join(map(repr, misses))


def test_open_today_asks_for_the_opening_hours(fifth_pass_shops):
    # "today" is a word the texts never use: it asks with "open", as "Store hours?" asks with "store".
    misses = _first_source_misses(fifth_pass_shops["faq and blocks"], {"Are you open today?": ("Shop info", "7:00")})
    assert misses == [], "\n".join(map(repr, misses))
