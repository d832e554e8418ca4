"""The small-knowledge-base family of `python -m bench quality`: a new customer's first minutes.

Generated, seeded workspaces of small businesses (a bike shop, a bakery, a phone repair shop ...), each with 1-5 short
multi-topic texts typed in, sometimes a FAQ and a one-page PDF, written as small businesses write them: prose
("You can return any item within 30 days of purchase."), terse lines ("Returns: 30 days from the date of purchase"),
FAQ pairs. Facts: prices, store and phone hours, returns, shipping, free-shipping threshold, warranty, contact, gift
cards; each fact lives in exactly one document, so "the right source first" is defined.

Questions per workspace: a direct question and a paraphrase per fact, a typo, a follow-up that leans on the previous
question, and out-of-scope questions about the same business that the texts don't answer ("Do you ship to Canada?"
when only delivery times are given, "Do you accept PayPal?"). Multi-part questions are reported apart ("multi":
two facts from two documents in one message; "multi_partial": a fact and an out-of-scope question).

Fit and eval halves are fixed before any tuning: even workspaces are "fit", odd ones "eval". Eval workspaces also use
wording templates (document sentences and questions) that fit workspaces never see (`held_out=True`), so the eval
figures measure wording the coverage rule was not tuned on.
"""
from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass, field
from typing import Any

SEED = 20261122
WORKSPACES = 60
SLUG_PREFIX = "bench-smallkb-"

BUSINESSES = [
    ("bike shop", ["city bike", "bike helmet", "bike lock", "tune-up"]),
    ("bakery", ["sourdough loaf", "birthday cake", "box of croissants"]),
    ("furniture store", ["oak dining table", "three-seat sofa", "bookshelf"]),
    ("phone repair shop", ["screen replacement", "battery replacement", "charging port repair"]),
    ("pet supply store", ["orthopedic dog bed", "cat tree", "bag of dog food"]),
    ("bookstore", ["hardcover novel", "reading light", "tote bag"]),
    ("flower shop", ["bouquet of roses", "orchid in a pot", "wedding centerpiece"]),
    ("outdoor gear shop", ["two-person tent", "hiking backpack", "sleeping bag"]),
    ("coffee roaster", ["bag of espresso beans", "pour-over kettle", "coffee grinder"]),
    ("toy store", ["wooden train set", "puzzle", "plush bear"]),
    ("shoe store", ["pair of running shoes", "pair of leather boots", "pair of sandals"]),
    ("kitchenware store", ["cast iron skillet", "chef's knife", "stand mixer"]),
    ("garden center", ["lemon tree", "bag of potting soil", "garden hose"]),
    ("eyewear shop", ["pair of prescription glasses", "pair of sunglasses", "eye exam"]),
    ("music store", ["acoustic guitar", "digital piano", "set of guitar strings"]),
]
NAME_FIRST = ["Maple", "Harbor", "Blue Fern", "Copper", "Northside", "Juniper", "Old Mill", "Sunny", "Riverbend",
              "Cedar", "Lakeview", "Oak & Ivy", "Little Owl", "Brightside", "Willow", "Redwood", "Pine Hill"]
CITIES = ["Springfield", "Riverton", "Fairview", "Madison", "Georgetown", "Salem", "Franklin", "Clinton"]

# Questions about the same business that no generated text answers (the texts never use their key words).
OUT_OF_SCOPE = [
    ("Do you ship to Canada?", False), ("Do you accept PayPal?", False), ("Do you offer gift wrapping?", False),
    ("Is there a student discount?", False), ("Do you have a loyalty program?", False),
    ("Are you hiring right now?", False), ("Is there parking near the store?", False),
    ("Do you offer financing or payment plans?", False), ("Can I change my order after I placed it?", False),
    ("Do you ship internationally?", True), ("Can I pay with Apple Pay?", True), ("Do you price match?", True),
    ("Is your store wheelchair accessible?", True), ("Do you have a newsletter I can sign up for?", True),
    ("Are your products made locally?", True), ("Can I bring my dog into the store?", True),
    ("What is the capital of France?", False), ("Who won the World Cup in 2014?", True),
]


@dataclass
class Fact:
    topic: str
    value: str  # what a right answer must contain
    sentences: list[str]  # ways a business writes it (prose / terse / FAQ pair with "Q:" and "A:")
    direct: list[tuple[str, bool]]  # (question, held_out)
    paraphrase: list[tuple[str, bool]]
    follow_up: tuple[str, str] | None = None  # (previous question, follow-up question)


@dataclass
class Workspace:
    index: int
    slug: str
    name: str
    split: str
    documents: list[dict[str, Any]] = field(default_factory=list)  # {"title", "kind", "text", "facts": [topic]}
    questions: list[dict[str, Any]] = field(default_factory=list)


def _pick(rng: random.Random, options: list[Any], split: str) -> Any:
    """A template: fit workspaces only see the ones not held out; eval workspaces see them all."""
    usable = [o for o in options if split == "eval" or not (isinstance(o, tuple) and o[-1])]
    choice = rng.choice(usable)
    return choice[0] if isinstance(choice, tuple) else choice


def _facts(rng: random.Random, business: str, products: list[str], domain: str) -> list[Fact]:
    product = rng.choice(products)
    price = rng.choice([9, 12, 18, 24, 35, 49, 65, 89, 120, 149, 240, 399, 650])
    cents = rng.choice(["", "", ".99", ".50"])
    returns = rng.choice([14, 21, 30, 45, 60, 90])
    ship = rng.choice([1, 2, 3, 4, 5, 7])
    free = rng.choice([35, 50, 75, 100, 150])
    warranty = rng.choice([1, 2, 3, 5])
    warranty_item = rng.choice(products)
    open_h, close_h = rng.choice([7, 8, 9, 10]), rng.choice([5, 6, 7, 8])
    sat_open, sat_close = rng.choice([9, 10, 11]), rng.choice([2, 3, 4])
    call_open, call_close = rng.choice([8, 9]), rng.choice([4, 5, 6])
    phone = f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    days = lambda n: f"{n} business day" + ("" if n == 1 else "s")  # noqa: E731
    years = lambda n: f"{n} year" + ("" if n == 1 else "s")  # noqa: E731
    Product = product[0].upper() + product[1:]
    article = "an" if product[0] in "aeiou" else "a"
    facts = [
        Fact("price", f"{price}{cents}", [
            (f"{article.capitalize()} {product} costs ${price}{cents}.", False),
            (f"{Product}: ${price}{cents}", False),
            (f"Our {product} is priced at ${price}{cents}, tax included.", True),
            (f"Q: How much is {article} {product}?\nA: ${price}{cents}.", False),
        ], [(f"How much does {article} {product} cost?", False), (f"What is the price of {article} {product}?", True)],
            [(f"how much is {article} {product}", False), (f"What would I pay for {article} {product}?", True)]),
        Fact("returns", str(returns), [
            (f"You can return any item within {returns} days of purchase for a full refund.", False),
            (f"Returns: {returns} days from the date of purchase", False),
            (f"The returns window is {returns} days.", True),
            (f"Unused items can be sent back up to {returns} days after delivery.", True),
            (f"Q: Can I return something?\nA: Yes, within {returns} days, with the receipt.", False),
        ], [("How long is the returns window?", False), ("What is your return policy?", False),
            ("How many days do I have to return an item?", True)],
            [("how many days do i have to return something", False), ("Can I send something back if I don't like it?", True),
             ("Until when can I bring back a purchase?", True)]),
        Fact("shipping", str(ship), [
            (f"Orders ship within {days(ship)}.", False),
            (f"Shipping takes {days(ship)}.", False),
            (f"Delivery: {days(ship)}", True),
            (f"Standard delivery takes {days(ship)} from our warehouse.", True),
            (f"Q: How long does delivery take?\nA: About {days(ship)}.", False),
        ], [("How long does shipping take?", False), ("How long does delivery take?", True)],
            [("How fast do you ship orders?", False), ("When will my order arrive?", True),
             ("how many days until my package gets here", True)]),
        Fact("free_shipping", str(free), [
            (f"Shipping is free on orders over ${free}.", False),
            (f"Free shipping over ${free}", False),
            (f"Spend ${free} or more and we cover the shipping.", True),
            (f"Q: Is shipping free?\nA: Yes, for orders above ${free}.", False),
        ], [("Do you offer free shipping?", False), ("Is shipping free?", True)],
            [("When do I not have to pay for shipping?", False), ("Is there a minimum order for free delivery?", True)]),
        Fact("warranty", str(warranty), [
            (f"Every {warranty_item} comes with a {warranty}-year warranty.", False),
            (f"Warranty: {years(warranty)} on every {warranty_item}", False),
            (f"We guarantee each {warranty_item} for {years(warranty)} against defects.", True),
            (f"Q: Is there a warranty?\nA: Yes, {years(warranty)} on the {warranty_item}.", False),
        ], [(f"How long is the warranty on the {warranty_item}?", False), ("Is there a warranty?", True)],
            [(f"What if my {warranty_item} breaks after a few months?", False),
             (f"How long is the {warranty_item} guaranteed?", True)]),
        Fact("hours", str(open_h), [
            (f"Our store is open Monday to Friday from {open_h} am to {close_h} pm.", False),
            (f"Opening hours: Mon-Fri {open_h}:00-{close_h + 12}:00", False),
            (f"We're open weekdays {open_h}am-{close_h}pm.", True),
            (f"Q: When are you open?\nA: Monday through Friday, {open_h} am to {close_h} pm.", False),
        ], [("What are your opening hours?", False), ("When is the store open?", True)],
            [("what time do you open", False), ("Are you open in the morning on weekdays?", True)],
            follow_up=("What are your opening hours?", "and on Saturday?")),
        Fact("saturday", str(sat_open), [
            (f"On Saturdays we are open from {sat_open} am to {sat_close} pm.", False),
            (f"Saturday: {sat_open}:00-{sat_close + 12}:00", False),
            (f"Saturday hours are {sat_open} am to {sat_close} pm.", True),
        ], [("Are you open on Saturday?", False), ("What are your Saturday hours?", True)],
            [("can i come by on a saturday", False), ("What time do you close on Saturdays?", True)]),
        Fact("phone", str(call_open), [
            (f"Call us {call_open}am to {call_close}pm on weekdays at {phone}.", False),
            (f"Phone support: {phone}, weekdays {call_open}-{call_close + 12}h", True),
            (f"Our team answers the phone at {phone} from {call_open} am to {call_close} pm, Monday to Friday.", False),
        ], [("When is phone support open?", False), ("What are your phone hours?", True)],
            [("When can I call you?", False), ("What time can I reach someone by phone?", True)]),
        Fact("email", f"hello@{domain}", [
            (f"Questions? Write to hello@{domain}.", False),
            (f"Email: hello@{domain}", False),
            (f"You can reach us by email at hello@{domain}; we reply within a day.", True),
        ], [("What is your email address?", False), ("How can I contact you by email?", True)],
            [("where do i send an email", False), ("Can I write to you?", True)]),
        Fact("gift_cards", "never", [
            ("Gift cards never expire.", False),
            ("Gift cards: no expiry date", True),
            ("Our gift cards never expire and can be used online and in the shop.", False),
        ], [("Do gift cards expire?", False), ("Is there an expiry date on gift cards?", True)],
            [("how long is a gift card good for", False), ("Can I still use an old gift card?", True)]),
    ]
    return facts


def _typo(rng: random.Random, text: str) -> str:
    """Swap two adjacent letters in one longer word ("retrun"), as people type on phones."""
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(re.sub(r"\W", "", w)) >= 5]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(re.sub(r"\W", "", word)) - 2)
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return " ".join(words).lower()


TITLES = ["About us", "Store info", "Good to know", "Policies", "Welcome", "Customer information", "The basics",
          "Info", "Notes for customers", "How we work"]


def workspaces_generate(*, count: int = WORKSPACES, seed: int = SEED) -> list[Workspace]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        split = "fit" if index % 2 == 0 else "eval"
        business, products = rng.choice(BUSINESSES)
        name = f"{rng.choice(NAME_FIRST)} {business.title()}"
        city = rng.choice(CITIES)
        domain = re.sub(r"[^a-z]", "", name.lower())[:18] + ".example"
        facts = _facts(rng, business, products, domain)
        chosen = rng.sample(facts, rng.randint(3, 7))
        n_documents = rng.randint(1, min(5, len(chosen)))
        kinds = ["prose"] * n_documents
        if n_documents >= 2 and rng.random() < 0.5:
            kinds[rng.randrange(n_documents)] = "faq"
        if rng.random() < 0.4:
            kinds[rng.randrange(n_documents)] = "pdf"
        rng.shuffle(chosen)
        groups: list[list[Fact]] = [[] for _ in range(n_documents)]
        for position, fact in enumerate(chosen):
            groups[position % n_documents if position < n_documents else rng.randrange(n_documents)].append(fact)
        titles = rng.sample(TITLES, n_documents)
        workspace = Workspace(index, f"{SLUG_PREFIX}{index:03d}", name, split)
        for kind, group, title in zip(kinds, groups, titles):
            lines = []
            for fact in group:
                options = [s for s in fact.sentences if (kind == "faq") == s[0].startswith("Q:")] or fact.sentences
                sentence = _pick(rng, options, split)
                if kind != "faq" and sentence.startswith("Q:"):
                    sentence = sentence.split("\nA: ", 1)[1]
                lines.append(sentence)
            if kind == "faq":
                text = "\n\n".join(lines)
            elif rng.random() < 0.5:  # one paragraph of prose
                text = " ".join(line if re.search(r"[.!?]$", line) else line + "." for line in lines)
            else:  # a line per fact, as a notice board or a flyer
                text = "\n".join(lines)
            if rng.random() < 0.5:
                text = f"Welcome to {name} in {city}. " + ("\n" if "\n" in text else "") + text
            workspace.documents.append({"title": title if kind != "faq" else "FAQ", "kind": kind, "text": text,
                                        "facts": [f.topic for f in group]})
        for fact in chosen:
            for style, options in (("direct", fact.direct), ("paraphrase", fact.paraphrase)):
                workspace.questions.append({"kind": "in", "style": style, "topic": fact.topic, "value": fact.value,
                                            "question": _pick(rng, options, split), "history": []})
        fact = rng.choice(chosen)
        workspace.questions.append({"kind": "in", "style": "typo", "topic": fact.topic, "value": fact.value,
                                    "question": _typo(rng, _pick(rng, fact.direct, split)), "history": []})
        topics = {f.topic: f for f in chosen}
        if "hours" in topics and "saturday" in topics:
            previous, follow_up = topics["hours"].follow_up
            workspace.questions.append({"kind": "in", "style": "follow_up", "topic": "saturday",
                                        "value": topics["saturday"].value, "question": follow_up,
                                        "history": [["customer", previous], ["assistant", "..."]]})
        usable = [q for q, held_out in OUT_OF_SCOPE if split == "eval" or not held_out]
        for question in rng.sample(usable, 3):
            workspace.questions.append({"kind": "out", "style": "out_of_scope", "topic": "", "value": "",
                                        "question": question, "history": []})
        workspace.questions.extend(_multi_part_questions(seed, index, split, chosen, workspace.documents))
        for number, item in enumerate(workspace.questions):
            item["id"] = f"{workspace.slug}-q{number:02d}"
            item["split"] = split
            topics = item.get("topics") or [item["topic"]]
            item["documents"] = [d["title"] for d in workspace.documents if set(topics) & set(d["facts"])]
        out.append(workspace)
    return out


def _multi_part_questions(seed: int, index: int, split: str, chosen: list[Fact],
                          documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two questions in one message (issue #22): two facts kept in different documents ("multi"), and a fact with
    an out-of-scope question about the same business ("multi_partial": answer one part, decline the other). A
    random generator of their own, so adding them changed none of the other questions."""
    rng = random.Random(seed * 1000 + index)
    where = {topic: d["title"] for d in documents for topic in d["facts"]}
    out: list[dict[str, Any]] = []
    joined = lambda first, second: f"{first.rstrip('?')}, and {second[0].lower()}{second[1:]}"  # noqa: E731
    pairs = [(a, b) for a in chosen for b in chosen if a.topic < b.topic and where[a.topic] != where[b.topic]
             and {a.topic, b.topic} != {"hours", "saturday"}]
    if pairs:
        first, second = rng.choice(pairs)
        out.append({"kind": "multi", "style": "multi_part", "topic": "", "topics": [first.topic, second.topic],
                    "value": "", "values": [first.value, second.value],
                    "question": joined(_pick(rng, first.direct, split), _pick(rng, second.direct, split)),
                    "history": []})
    fact = rng.choice(chosen)
    usable = [q for q, held_out in OUT_OF_SCOPE[:-2] if split == "eval" or not held_out]
    out.append({"kind": "multi_partial", "style": "multi_part", "topic": fact.topic, "value": fact.value,
                "question": joined(_pick(rng, fact.direct, split), rng.choice(usable)), "history": []})
    return out


def pdf_bytes(text: str, *, title: str, encoding: str = "latin-1") -> bytes:
    """A one-page PDF with a text layer: one Helvetica line per line of `text` (long lines wrapped at 90 chars).
    `encoding` "cp1252": the font declares WinAnsiEncoding, so dashes and curly quotes survive (the probe sample's
    "Mon–Fri"); the fit/eval family keeps the Latin-1 bytes it was measured with."""
    import textwrap

    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, 90) or [""])
    escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    stream = "\n".join(["BT", "/F1 11 Tf", "14 TL", "72 720 Td", *[f"({line}) Tj T*" for line in escaped], "ET"])
    body = stream.encode(encoding, "replace")
    font = (b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>" if encoding == "cp1252"
            else b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        font,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream",
        b"<< /Title (%s) >>" % title.encode("latin-1", "replace"),
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def workspace_build(spec: Workspace) -> Any:
    """The workspace with its documents indexed through the real pipeline, in this process; reused when it exists
    with the same documents. Leaves the connection in the workspace's schema."""
    from django.core.files.base import ContentFile
    from django.db import connection

    from accounts.services import workspace_signup
    from documents import pipeline, services
    from documents.models import Document, DocumentStatus
    from tenants.selectors import workspace_get

    connection.set_schema_to_public()
    workspace = workspace_get(slug=spec.slug)
    if workspace is None:
        _user, result = workspace_signup(email="bench-smallkb@example.test", password="bench-smallkb-password-1",
                                         workspace_name=spec.name, slug=spec.slug, existing_user_ok=True)
        workspace = result.workspace
    connection.set_tenant(workspace)
    wanted = {d["title"] for d in spec.documents}
    if set(Document.objects.filter(status=DocumentStatus.INDEXED).values_list("title", flat=True)) == wanted \
            and Document.objects.count() == len(wanted):
        return workspace
    for document in Document.objects.all():
        services.document_delete(document=document)
    for spec_document in spec.documents:
        if spec_document["kind"] == "pdf":
            content = ContentFile(pdf_bytes(spec_document["text"], title=spec_document["title"],
                                            encoding=spec_document.get("pdf_encoding", "latin-1")),
                                  name=f"{spec_document['title']}.pdf")
            document = services.document_upload(uploaded_file=content, title=spec_document["title"])
        else:
            document = services.document_create_text(title=spec_document["title"], text=spec_document["text"])
        outcome = pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token)
        if outcome.result not in ("indexed", "already_indexed"):
            raise RuntimeError(f"{spec.slug} {spec_document['title']}: {outcome.result}")
    return workspace


def small_kb_answers(*, count: int = WORKSPACES, specs: list[Workspace] | None = None) -> list[dict[str, Any]]:
    """Build every workspace (`specs`, else the fit/eval family) and answer its questions through `answer_once`;
    one row per question."""
    from django.db import connection

    from chat.answering import answer_once
    from documents.retrieval import knowledge_retrieve, retrieval_query_build

    rows = []
    for spec in specs if specs is not None else workspaces_generate(count=count):
        workspace_build(spec)
        for item in spec.questions:
            history = [tuple(turn) for turn in item["history"]]
            data = answer_once(question=item["question"], history=history)
            retrieval = knowledge_retrieve(query=retrieval_query_build(question=item["question"], history=history))
            cited = [c["title"] for c in data["citations"]]
            answer = data["answer"].lower()
            rows.append({
                **item, "workspace": spec.slug, "answered": data["answered"], "reason": data["reason"],
                "answer": data["answer"], "cited": cited,
                "right_source_first": bool(cited) and cited[0] in item["documents"],
                "fact_in_answer": bool(item["value"]) and item["value"].lower() in answer,
                "all_sources_cited": set(item["documents"]) <= set(cited),
                "all_facts_in_answer": all(value.lower() in answer for value in item.get("values", [])),
                "says_what_is_not_covered": "couldn't find anything" in answer and data["answered"],
                "top_similarity": retrieval.top_similarity, "signals": getattr(retrieval, "signals", {}),
            })
        connection.set_schema_to_public()
    return rows


def small_kb_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def figures(items: list[dict[str, Any]]) -> dict[str, Any]:
        inside = [r for r in items if r["kind"] == "in"]
        outside = [r for r in items if r["kind"] == "out"]
        out: dict[str, Any] = {"workspaces": len({r["workspace"] for r in items}), "in_scope": len(inside),
                               "out_of_scope": len(outside)}
        if inside:
            out["answered_in_scope"] = round(sum(r["answered"] for r in inside) / len(inside), 3)
            out["answered_right_source_first"] = round(
                sum(r["answered"] and r["right_source_first"] for r in inside) / len(inside), 3)
            out["answered_with_fact"] = round(
                sum(r["answered"] and r["right_source_first"] and r["fact_in_answer"] for r in inside) / len(inside), 3)
            out["by_style"] = {style: round(sum(r["answered"] and r["right_source_first"] for r in group)
                                            / len(group), 3)
                               for style in ("direct", "paraphrase", "typo", "follow_up")
                               if (group := [r for r in inside if r["style"] == style])}
        if outside:
            out["declined_out_of_scope"] = round(sum(not r["answered"] for r in outside) / len(outside), 3)
        both = [r for r in items if r["kind"] == "multi"]
        partial = [r for r in items if r["kind"] == "multi_partial"]
        if both:
            # Two in-scope parts, two documents: answered, both documents cited, both facts quoted.
            out["multi_part"] = {
                "questions": len(both),
                "both_sources_cited": round(sum(r["answered"] and r["all_sources_cited"] for r in both) / len(both), 3),
                "both_facts_in_answer": round(sum(r["answered"] and r["all_sources_cited"] and r["all_facts_in_answer"]
                                                  for r in both) / len(both), 3)}
        if partial:
            # One in-scope part, one the texts don't answer: the first answered from its document, the other named.
            out["multi_part_one_uncovered"] = {
                "questions": len(partial),
                "answered_right_source_first_and_other_part_declined": round(sum(
                    r["answered"] and r["right_source_first"] and r["says_what_is_not_covered"] for r in partial)
                    / len(partial), 3)}
        return out

    probe = [r for r in rows if r["split"] == "probe"]
    return {
        "fit": figures([r for r in rows if r["split"] == "fit"]),
        "eval": figures([r for r in rows if r["split"] == "eval"]),
        **({"probe": figures(probe)} if probe else {}),
        "misses": {
            "in_scope_not_right": [
                {"id": r["id"], "q": r["question"], "reason": r["reason"], "cited": r["cited"][:1],
                 "expected": r["documents"]} for r in rows if r["kind"] == "in" and not (r["answered"] and r["right_source_first"])],
            "out_of_scope_answered": [{"id": r["id"], "q": r["question"]} for r in rows
                                      if r["kind"] == "out" and r["answered"]],
            "multi_part": [{"id": r["id"], "q": r["question"], "cited": r["cited"], "expected": r["documents"]}
                           for r in rows if (r["kind"] == "multi" and not (r["answered"] and r["all_sources_cited"]))
                           or (r["kind"] == "multi_partial" and not (r["answered"] and r["right_source_first"]
                                                                   and r["says_what_is_not_covered"]))],
        },
    }


# --- the probe sample (issue #20, third pass) -----------------------------------------------------------------------
#
# A third split, "probe", to look for mechanisms on without reading the eval half: another seed and wording templates
# of its own (neither fit's nor eval's), written for the third pass — bullet lists, "Hours:" blocks, FAQs whose
# question line has no "Q:", price lists, a filler sentence or two — and questions as customers type them (terse,
# "what's ...", no question mark). Never counted in the fit/eval figures; `workspaces_generate` is unchanged.

PROBE_SEED = 20261207
PROBE_WORKSPACES = 40
PROBE_SLUG_PREFIX = "bench-smallkb-probe-"

PROBE_OUT_OF_SCOPE = [
    "Do you ship to Mexico?", "Can I pay in cash?", "Do you have a rewards card?", "Is there a military discount?",
    "Do you sell used items?", "Can I reserve something online and pick it up in the store?",
    "Do you offer installation?", "Do you have a store in Boston?", "Can I pay with Venmo?",
    "How do I track my order?", "Can I cancel my order?", "Do you offer bulk discounts?", "Who owns the shop?",
    "Do you have a mobile app?", "Do you buy back old items?", "Do you have a sale coming up?",
    "Can I book a private appointment?", "Do you sell online in Europe?",
]
PROBE_FILLERS = [
    "We are a family-run {business} in {city}.", "Thanks for shopping local!", "Follow us for new arrivals.",
    "Our team loves helping you find the right thing.", "We have been in {city} for over ten years.",
]
PROBE_TITLES = ["Shop info", "Before you buy", "Help", "Customer service", "Store details", "Our policies", "Hello",
                "FAQ and policies", "Visiting us", "Read me"]


def _probe_facts(rng: random.Random, products: list[str], domain: str) -> list[Fact]:
    """The same ten facts as `_facts`, in wordings of the probe's own. A sentence template is (text, kind): kind
    "line" (a terse line, bulleted in a list), "prose", or "faq" (a question line, then its answer line, no "Q:")."""
    product = rng.choice(products)
    price = rng.choice([8, 15, 22, 29, 42, 55, 79, 95, 135, 180, 275, 420, 799])
    cents = rng.choice(["", "", ".95", ".00"])
    returns = rng.choice([7, 10, 14, 28, 30, 60])
    ship = rng.choice([1, 2, 3, 5, 6, 10])
    free = rng.choice([40, 60, 80, 99, 120])
    warranty = rng.choice([1, 2, 3, 10])
    item = rng.choice(products)
    open_h, close_h = rng.choice([7, 8, 9, 10]), rng.choice([5, 6, 7, 9])
    sat_open, sat_close = rng.choice([8, 9, 10]), rng.choice([1, 3, 5])
    call_open, call_close = rng.choice([8, 9, 10]), rng.choice([4, 5, 7])
    phone = f"({rng.randint(200, 989)}) 555-{rng.randint(1000, 9999)}"
    days = lambda n: f"{n} business day" + ("" if n == 1 else "s")  # noqa: E731
    years = lambda n: f"{n} year" + ("" if n == 1 else "s")  # noqa: E731
    Product, Item = product[0].upper() + product[1:], item[0].upper() + item[1:]
    a = "an" if product[0] in "aeiou" else "a"
    return [
        Fact("price", f"{price}{cents}", [
            (f"{Product} – ${price}{cents}", "line"),
            (f"{Product} .......... ${price}{cents}", "line"),
            (f"{a.capitalize()} {product} is ${price}{cents}.", "prose"),
            (f"We sell {a} {product} for ${price}{cents}.", "prose"),
            (f"How much do you charge for {a} {product}?\n${price}{cents}, tax included.", "faq"),
        ], [(f"what's the price of {a} {product}", False), (f"{Product} price?", False),
            (f"How much are you asking for {a} {product}?", False)],
            [(f"how much would {a} {product} cost me", False), (f"what do you charge for {a} {product}", False)]),
        Fact("returns", str(returns), [
            (f"Returns accepted within {returns} days (receipt required)", "line"),
            (f"Return period: {returns} days", "line"),
            (f"Changed your mind? Bring it back within {returns} days.", "prose"),
            (f"We take returns for up to {returns} days after purchase.", "prose"),
            (f"What's your return policy?\nYou have {returns} days to return unused items.", "faq"),
        ], [("what's the return policy", False), ("How long do I have to return something?", False),
            ("Is there a time limit on returns?", False)],
            [("can i bring back something i bought last week", False), ("returns?", False),
             ("how many days for a refund", False)]),
        Fact("shipping", str(ship), [
            (f"Delivery time: {days(ship)}", "line"),
            (f"Dispatch: within {days(ship)}", "line"),
            (f"Your parcel should arrive {days(ship)} after you order.", "prose"),
            (f"Most orders reach you within {days(ship)}.", "prose"),
            (f"When will my order arrive?\nUsually within {days(ship)}.", "faq"),
        ], [("what's the delivery time", False), ("How long until I get my order?", False)],
            [("how quick is shipping", False), ("when does my package arrive", False),
             ("How many days does delivery take?", False)]),
        Fact("free_shipping", str(free), [
            (f"Free delivery on orders of ${free}+", "line"),
            (f"Free shipping from ${free}", "line"),
            (f"Orders above ${free} ship for free.", "prose"),
            (f"No shipping charge once your basket reaches ${free}.", "prose"),
            (f"Do you charge for shipping?\nIt's free on orders over ${free}.", "faq"),
        ], [("is delivery free", False), ("How much do I need to spend to get free shipping?", False)],
            [("do i have to pay for shipping", False), ("Free shipping?", False),
             ("what's the minimum for free delivery", False)]),
        Fact("warranty", str(warranty), [
            (f"{Item}: {years(warranty)} warranty", "line"),
            (f"Guarantee: {years(warranty)} on the {item}, parts and labour", "line"),
            (f"If your {item} breaks within {years(warranty)}, we repair or replace it for free.", "prose"),
            (f"The {item} is covered by our {warranty}-year guarantee.", "prose"),
            (f"What if my {item} stops working?\nIt is under warranty for {years(warranty)}.", "faq"),
        ], [(f"does the {item} come with a warranty", False), (f"Is the {item} under guarantee?", False)],
            [(f"my {item} broke, is it covered?", False), (f"how long is the {item} covered for", False)]),
        Fact("hours", str(open_h), [
            (f"Mon–Fri: {open_h}am–{close_h}pm", "line"),
            (f"Weekdays {open_h}:00 – {close_h}:00 pm", "line"),
            (f"Doors open at {open_h} a.m. and close at {close_h} p.m., Monday through Friday.", "prose"),
            (f"During the week we are here from {open_h} in the morning until {close_h} in the evening.", "prose"),
            (f"What are your hours?\nMonday to Friday, {open_h}am to {close_h}pm.", "faq"),
        ], [("when do you open", False), ("Store hours?", False), ("what time do you close on weekdays", False)],
            [("how late are you open", False), ("Are you open during the week?", False)],
            follow_up=("when do you open", "what about saturdays?")),
        Fact("saturday", str(sat_open), [
            (f"Sat: {sat_open}am–{sat_close}pm", "line"),
            (f"Saturday {sat_open}–{sat_close}, Sunday closed", "line"),
            (f"On Saturday we open at {sat_open} a.m. and close at {sat_close} p.m.", "prose"),
            (f"Weekends: Saturdays only, {sat_open}am until {sat_close}pm.", "prose"),
        ], [("are you open saturdays", False), ("Saturday hours?", False)],
            [("can i stop by on the weekend", False), ("what time do you open on saturday", False)]),
        Fact("phone", str(call_open), [
            (f"Phone: {phone} (Mon–Fri, {call_open}am–{call_close}pm)", "line"),
            (f"Call {phone}, weekdays {call_open}–{call_close}", "line"),
            (f"Give us a ring on {phone} between {call_open}am and {call_close}pm on weekdays.", "prose"),
            (f"Our phone line ({phone}) is staffed from {call_open} am to {call_close} pm on business days.",
             "prose"),
        ], [("what's your phone number", False), ("what hours can I phone you", False)],
            [("is there a number I can call", False), ("when does customer service pick up the phone", False)]),
        Fact("email", f"hello@{domain}", [
            (f"E-mail us: hello@{domain}", "line"),
            (f"Contact: hello@{domain}", "line"),
            (f"Drop us a line at hello@{domain} and we'll get back to you.", "prose"),
            (f"For anything else, message hello@{domain}.", "prose"),
        ], [("what's your e-mail", False), ("Is there an email address for support?", False)],
            [("how do i contact you", False), ("can i email you", False), ("how can i get in touch", False)]),
        Fact("gift_cards", "never", [
            ("Gift vouchers never expire", "line"),
            ("Gift cards never expire - use them whenever you like.", "prose"),
            ("There is no expiry on our gift cards; they never lose their value.", "prose"),
            ("Gift certificates never expire and work in store and online.", "prose"),
        ], [("do gift cards have an expiration date", False), ("when does a gift card expire", False)],
            [("is my old gift card still valid", False), ("do your gift certificates run out?", False)]),
    ]


def probe_workspaces_generate(*, count: int = PROBE_WORKSPACES, seed: int = PROBE_SEED) -> list[Workspace]:
    """The probe sample: workspaces in the probe's own wordings and layouts (see above), split "probe"."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        business, products = rng.choice(BUSINESSES)
        name = f"{rng.choice(NAME_FIRST)} {business.title()}"
        city = rng.choice(CITIES)
        domain = re.sub(r"[^a-z]", "", name.lower())[:18] + ".example"
        facts = _probe_facts(rng, products, domain)
        chosen = rng.sample(facts, rng.randint(3, 8))
        n_documents = rng.randint(1, min(4, len(chosen)))
        # Layouts: "prose" (a paragraph), "lines" (a notice board), "bullets" ("- " lists), "faq" (question line,
        # answer line), "blocks" (a heading line such as "Hours:" over its lines), and a one-page PDF of any of them.
        layouts = [rng.choice(["prose", "lines", "bullets", "faq", "blocks"]) for _ in range(n_documents)]
        pdf = rng.random() < 0.35
        pdf_at = rng.randrange(n_documents)
        rng.shuffle(chosen)
        groups: list[list[Fact]] = [[] for _ in range(n_documents)]
        for position, fact in enumerate(chosen):
            groups[position % n_documents if position < n_documents else rng.randrange(n_documents)].append(fact)
        titles = rng.sample(PROBE_TITLES, n_documents)
        # Another seed, other workspaces: `workspace_build` reuses a workspace whose document titles match.
        prefix = PROBE_SLUG_PREFIX if seed == PROBE_SEED else f"{PROBE_SLUG_PREFIX}{seed}-"
        workspace = Workspace(index, f"{prefix}{index:03d}", name, "probe")
        for position, (layout, group, title) in enumerate(zip(layouts, groups, titles)):
            entries = []
            for fact in group:
                wanted = {"prose": ["prose"], "faq": ["faq"]}.get(layout, ["line", "prose"] if layout == "lines"
                                                                   else ["line"])
                options = [(text, kind) for text, kind in fact.sentences if kind in wanted] or fact.sentences
                text, kind = rng.choice(options)
                if kind == "faq" and layout != "faq":
                    text = text.split("\n", 1)[1]
                entries.append((fact.topic, text))
            filler = rng.choice(PROBE_FILLERS).format(business=business, city=city)
            if layout == "prose":
                body = " ".join(t if re.search(r"[.!?]$", t) else t + "." for _, t in entries)
                text = f"{filler} {body}" if rng.random() < 0.6 else body
            elif layout == "faq":
                text = "\n\n".join(t if "\n" in t else f"{_probe_question_for(topic)}\n{t}" for topic, t in entries)
            elif layout == "blocks":
                heads = {"hours": "Hours:", "saturday": "Hours:", "phone": "Contact", "email": "Contact",
                         "returns": "Returns & refunds", "shipping": "Shipping", "free_shipping": "Shipping",
                         "price": "Prices", "warranty": "Warranty", "gift_cards": "Gift cards"}
                blocks: dict[str, list[str]] = {}
                for topic, t in entries:
                    blocks.setdefault(heads[topic], []).append(t)
                text = "\n\n".join(f"{head}\n" + "\n".join(lines) for head, lines in blocks.items())
            else:
                bullet = "- " if layout == "bullets" else ""
                text = "\n".join(f"{bullet}{t}" for _, t in entries)
                if rng.random() < 0.5:
                    text = f"{filler}\n{text}"
            kind = "pdf" if pdf and position == pdf_at else ("faq" if layout == "faq" else "prose")
            workspace.documents.append({"title": title, "kind": kind, "layout": layout, "text": text,
                                        "facts": [topic for topic, _ in entries], "pdf_encoding": "cp1252"})
        for fact in chosen:
            for style, options in (("direct", fact.direct), ("paraphrase", fact.paraphrase)):
                workspace.questions.append({"kind": "in", "style": style, "topic": fact.topic, "value": fact.value,
                                            "question": rng.choice(options)[0], "history": []})
        fact = rng.choice(chosen)
        workspace.questions.append({"kind": "in", "style": "typo", "topic": fact.topic, "value": fact.value,
                                    "question": _typo(rng, rng.choice(fact.direct + fact.paraphrase)[0]),
                                    "history": []})
        topics = {f.topic: f for f in chosen}
        if "hours" in topics and "saturday" in topics:
            previous, follow_up = topics["hours"].follow_up
            workspace.questions.append({"kind": "in", "style": "follow_up", "topic": "saturday",
                                        "value": topics["saturday"].value, "question": follow_up,
                                        "history": [["customer", previous], ["assistant", "..."]]})
        for question in rng.sample(PROBE_OUT_OF_SCOPE, 3):
            workspace.questions.append({"kind": "out", "style": "out_of_scope", "topic": "", "value": "",
                                        "question": question, "history": []})
        for number, item in enumerate(workspace.questions):
            item["id"] = f"{workspace.slug}-q{number:02d}"
            item["split"] = "probe"
            item["documents"] = [d["title"] for d in workspace.documents if item["topic"] in d["facts"]]
        out.append(workspace)
    return out


def _probe_question_for(topic: str) -> str:
    """The question line a FAQ puts over a terse answer ("Delivery time: 3 business days")."""
    return {"price": "What does it cost?", "returns": "Can I return things?", "shipping": "How long is delivery?",
            "free_shipping": "Is shipping free?", "warranty": "Is there a warranty?", "hours": "When are you open?",
            "saturday": "Are you open at the weekend?", "phone": "Can I call you?", "email": "How do I reach you?",
            "gift_cards": "Do gift cards expire?"}[topic]


def main() -> None:
    """`python -m bench.small_kb {probe,standard} --database NAME --redis-db N --out FILE`: the probe sample (or the
    standard fit/eval family) answered on a database of the caller's own; figures printed (the probe's misses too,
    never the eval half's), every row written to FILE."""
    import argparse
    import json
    import os
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m bench.small_kb")
    parser.add_argument("sample", choices=["probe", "standard"])
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis-db", type=int, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--seed", type=int, default=PROBE_SEED, help="probe only: another sample of the probe's wordings")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from bench._support import DATA_DIR, database_prepare

    folder = DATA_DIR / f"bench-{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{args.database}",
                      REDIS_URL=f"redis://127.0.0.1:6379/{args.redis_db}", CHROMA_PATH=str(folder / "chroma"),
                      MEDIA_ROOT=str(folder / "media"), WORKSPACE_POOL_SIZE="1", WORKSPACE_POOL_REFILL="inline",
                      LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"))
    database_prepare(dict(os.environ))
    import django

    django.setup()
    if args.sample == "probe":
        rows = small_kb_answers(specs=probe_workspaces_generate(count=args.count or PROBE_WORKSPACES, seed=args.seed))
    else:
        rows = small_kb_answers(count=args.count or WORKSPACES)
    with Path(args.out).open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    figures = small_kb_figures(rows)
    if args.sample == "standard":
        figures.pop("misses")  # the eval half's misses are not read (issue #20, third pass)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
