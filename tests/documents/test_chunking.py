"""Chunking by the embedding model's own tokens: every chunk fits the window, keeps its place, overlaps a little."""
from __future__ import annotations

import random

import pytest

from documents.chunking import HEADING_SEPARATOR, OVERLAP_RATIO, PREFIX_MAX_TOKENS, ChunkDraft, document_chunk
from documents.embedding import MINILM_MAX_TOKENS, embedder, wordpiece_counter
from documents.parsers import ParsedDocument, Section

count = wordpiece_counter()
WORDS = ("refund invoice shipping warranty router firmware password account billing customer support "
         "delivery exchange subscription configuration installation troubleshooting").split()


def prose(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        sentences.append(" ".join(words).capitalize() + ".")
    # Paragraphs of five sentences.
    return "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, len(sentences), 5))


def chunks_of(*sections: Section, title: str = "Manual", max_tokens: int = MINILM_MAX_TOKENS) -> list[ChunkDraft]:
    return document_chunk(parsed=ParsedDocument(title=title, sections=list(sections)), title=title,
                          tokenizer_count=count, max_tokens=max_tokens)


def model_tokens(text: str) -> int:
    """What the model reads: the word pieces plus [CLS] and [SEP]."""
    return count(text) + 2


@pytest.mark.parametrize(
    "text",
    [
        prose(300),
        "\n".join(f"- item {n}: {prose(1, n)}" for n in range(400)),  # many short lines
        "https://example.com/" + "a1b2/c3+" * 3000,  # no whitespace to split on
        "\u4f60\u597d\u4e16\u754c" * 800,  # CJK: every character is a word piece
        ("word " * 40 + "\n") * 60 + "x" * 5000,
    ],
    ids=["prose", "lines", "unbroken", "cjk", "mixed"],
)
def test_every_chunk_fits_the_model_window(text: str) -> None:
    chunks = chunks_of(Section(text=text, heading_path=["Setup", "Network"], page=4))
    assert len(chunks) > 1
    for chunk in chunks:
        assert model_tokens(chunk.embed_text) <= MINILM_MAX_TOKENS
        assert chunk.token_count == count(chunk.text)
        assert chunk.embed_text == f"Manual{HEADING_SEPARATOR}Setup{HEADING_SEPARATOR}Network\n{chunk.text}"


def test_smaller_windows_are_respected() -> None:
    chunks = chunks_of(Section(text=prose(100)), max_tokens=128)
    assert all(model_tokens(chunk.embed_text) <= 128 for chunk in chunks)


def test_chunks_keep_heading_path_page_and_order() -> None:
    chunks = chunks_of(
        Section(text="Intro text.", heading_path=[], page=1),
        Section(text=prose(60, 1), heading_path=["Install", "Linux"], page=2),
        Section(text="Short note on page three.", heading_path=["Install", "Linux"], page=3),
    )
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    assert chunks[0].heading_path == "" and chunks[0].page == 1
    assert chunks[0].embed_text == "Manual\nIntro text."
    middle = chunks[1:-1]
    assert middle and all(c.page == 2 and c.heading_path == "Install › Linux" for c in middle)
    # Never merged across pages, even when the heading is the same and both would fit together.
    assert chunks[-1].text == "Short note on page three." and chunks[-1].page == 3


def test_small_sections_under_different_headings_stay_apart() -> None:
    chunks = chunks_of(Section(text="Alpha.", heading_path=["A"]), Section(text="Beta.", heading_path=["B"]))
    assert [(c.heading_path, c.text) for c in chunks] == [("A", "Alpha."), ("B", "Beta.")]


def test_title_is_not_repeated_when_the_path_starts_with_it() -> None:
    chunks = chunks_of(Section(text="Body.", heading_path=["Manual", "Reset"]))
    assert chunks[0].embed_text == "Manual › Reset\nBody."
    assert chunks[0].heading_path == "Manual › Reset"


def test_long_heading_paths_are_shortened_in_the_prefix_only() -> None:
    path = [f"Chapter {n} " + "about many things " * 5 for n in range(6)]
    chunks = chunks_of(Section(text=prose(40), heading_path=path))
    prefix = chunks[0].embed_text.split("\n", 1)[0]
    assert count(prefix) <= PREFIX_MAX_TOKENS
    assert prefix.startswith("Manual › …")
    assert chunks[0].heading_path == " › ".join(path)
    assert all(model_tokens(chunk.embed_text) <= MINILM_MAX_TOKENS for chunk in chunks)


def test_neighbouring_chunks_overlap_by_about_a_tenth() -> None:
    chunks = chunks_of(Section(text=prose(200, 3), heading_path=["Guide"]))
    budget = MINILM_MAX_TOKENS - 2 - count("Manual › Guide")
    overlaps = []
    for left, right in zip(chunks, chunks[1:], strict=False):
        shared = 0
        for size in range(min(len(left.text), len(right.text)), 0, -1):
            if left.text.endswith(right.text[:size]):
                shared = size
                break
        overlaps.append(count(right.text[:shared]))
    assert sum(1 for o in overlaps if o > 0) >= len(overlaps) * 0.8
    assert max(overlaps) <= budget * 0.15
    assert OVERLAP_RATIO * budget * 0.4 <= sorted(overlaps)[len(overlaps) // 2]


def test_no_text_is_lost_and_chunks_are_well_filled() -> None:
    text = prose(250, 5)
    chunks = chunks_of(Section(text=text))
    joined = " ".join(chunk.text for chunk in chunks)
    for word in set(text.replace(".", " ").split()):
        assert word in joined
    sizes = sorted(chunk.token_count for chunk in chunks[:-1])
    assert sizes[len(sizes) // 2] >= 0.6 * (MINILM_MAX_TOKENS - 2 - count("Manual"))


def test_unbroken_text_is_cut_at_token_boundaries_without_loss() -> None:
    blob = "QmFz/ZTY0+" * 2000  # base64-like: no whitespace (and a word of >100 characters is one [UNK])
    chunks = chunks_of(Section(text=blob))
    assert "".join(chunk.text for chunk in chunks) == blob


def test_empty_sections_give_no_chunks() -> None:
    assert chunks_of(Section(text="   \n\n  ")) == []


def test_defaults_come_from_the_configured_embedder() -> None:
    parsed = ParsedDocument(title="T", sections=[Section(text=prose(80))])
    chunks = document_chunk(parsed=parsed, title="T")
    model = embedder()
    assert all(model.count_tokens(chunk.embed_text) + 2 <= model.max_tokens for chunk in chunks)
    assert chunks == chunks_of(Section(text=prose(80)), title="T")
