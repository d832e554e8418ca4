"""The built-in answerer runs in a thread pool (one answer per thread): answers composed concurrently must equal the
same answers composed one at a time. A stemmer shared between threads used to raise IndexError (the customer got
`provider_failure`) or return wrong stems under load."""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from chat.providers.builtin import builtin_compose, stems

WORDS = ("configuring installations packages repositories upgrading dependencies restarting services networking "
         "interfaces mirrors keyrings authentication certificates partitioning filesystems mounting journaling "
         "scheduling backups compressing archives monitoring notifications").split()


@dataclass
class Source:
    text: str
    dense_score: float


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "." for _ in range(sentences)
    )


def _run_in_threads(work, threads: int = 8) -> list[BaseException]:
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 — collected and reported by the test
            failures.append(exc)

    pool = [threading.Thread(target=guarded) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return failures


def test_stems_are_the_same_in_every_thread():
    rng = random.Random(7)
    texts = [_paragraph(rng, 40) for _ in range(20)]
    expected = [stems(text) for text in texts]
    wrong: list[int] = []

    def work() -> None:
        local = random.Random(threading.get_ident())
        for _ in range(40):
            index = local.randrange(len(texts))
            if stems(texts[index]) != expected[index]:
                wrong.append(index)

    assert _run_in_threads(work) == []
    assert wrong == []


def test_answers_composed_concurrently_equal_the_sequential_ones():
    rng = random.Random(11)
    cases = []
    for _ in range(12):
        sources = [Source(_paragraph(rng, 12), 0.8 - 0.05 * rank) for rank in range(3)]
        question = "How do I " + " ".join(rng.choice(WORDS) for _ in range(4)) + "?"
        cases.append((question, sources))
    expected = [builtin_compose(question=q, sources=s).text for q, s in cases]
    assert all(expected)
    mismatches: list[int] = []

    def work() -> None:
        for index, (question, sources) in enumerate(cases * 3):
            if builtin_compose(question=question, sources=sources).text != expected[index % len(cases)]:
                mismatches.append(index)

    assert _run_in_threads(work) == []
    assert mismatches == []
