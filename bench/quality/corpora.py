"""The corpora of `python -m bench quality`: where each one's files are, how a page is named, and its bench workspace.

A page is named by its path relative to the corpus root (`mod/mod_rewrite.html`); questions name pages the same way.
Each corpus is ingested into a workspace of its own through our real pipeline (upload → parse → chunk → embed →
index), in this process so no worker is needed. The workspace is kept between runs: a file whose content is already
indexed is not ingested again, and a document whose content is no longer among the corpus's files is deleted, so a
rerun costs the questions only.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPORA_DIR = HERE / "corpora"


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    globs: tuple[str, ...]
    package: str  # the Debian package that installs it ("" for a corpus kept in this repository)
    language: str = "en"
    sealed: bool = False  # its per-question results are never written anywhere; aggregate figures only
    slug: str = ""  # the bench workspace; "bench-quality-<name>" unless set

    @property
    def workspace_slug(self) -> str:
        return self.slug or f"bench-quality-{self.name}"

    @property
    def questions_path(self) -> Path:
        return CORPORA_DIR / self.name / "questions.jsonl"


CORPORA: dict[str, Corpus] = {c.name: c for c in [
    # Kept in the workspace the single-corpus bench used, so its index carries over.
    Corpus("handbook", Path("/usr/share/doc/debian-handbook/html/en-US"), ("*.html",), "debian-handbook",
           slug="bench-quality"),
    Corpus("gnucash", Path("/usr/share/doc/gnucash-docs"), ("gnucash-guide-en/*.html", "gnucash-help-en/*.html"),
           "gnucash-docs"),
    Corpus("gimp", Path("/usr/share/gimp/2.0/help/en"), ("**/*.html",), "gimp-help-en"),
    Corpus("git", Path("/usr/share/doc/git-doc"), ("**/*.html",), "git-doc"),
    Corpus("apache", Path("/usr/share/doc/apache2-doc/manual/en"), ("**/*.html",), "apache2-doc", sealed=True),
    Corpus("shop", CORPORA_DIR / "shop", ("*.md", "*.html", "*.csv", "*.txt"), ""),
]}


# --- files ------------------------------------------------------------------------------------------------------


def corpus_files(corpus: Corpus) -> dict[str, Path]:
    """page name → file on disk, installing the corpus's Debian package first when it is missing (as root)."""
    if not corpus.root.is_dir() and corpus.package and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", corpus.package], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not corpus.root.is_dir():
        hint = f": apt-get install {corpus.package}" if corpus.package else ""
        raise RuntimeError(f"{corpus.root} is missing{hint}")
    pages: dict[str, Path] = {}
    for pattern in corpus.globs:
        for path in corpus.root.glob(pattern):
            if path.is_file() and path.name != "questions.jsonl":
                pages[path.relative_to(corpus.root).as_posix()] = path
    return dict(sorted(pages.items()))


def upload_payload(page: str, path: Path) -> tuple[str, bytes]:
    """(file name, bytes) to upload for a page. The shop's `x.docx.md` / `x.pdf.md` sources become real DOCX / PDF
    files (page name unchanged); everything else is uploaded as it is, its directories folded into the name."""
    from bench.quality.shop import docx_from_markdown, pdf_from_markdown

    text_name = page.replace("/", "_")
    if page.endswith(".docx.md"):
        return text_name[:-3], docx_from_markdown(path.read_text(encoding="utf-8"))
    if page.endswith(".pdf.md"):
        return text_name[:-3], pdf_from_markdown(path.read_text(encoding="utf-8"))
    return text_name, path.read_bytes()


def page_text(page: str, path: Path) -> str:
    """The plain text of a page, as a naive pipeline reads it (HTML: text content without scripts and styles)."""
    if page.endswith((".html", ".htm")):
        import lxml.html

        root = lxml.html.parse(str(path)).getroot()
        if root is None:
            return ""
        for node in root.xpath("//script|//style"):
            node.drop_tree()
        return root.text_content()
    return path.read_text(encoding="utf-8", errors="replace")


# --- questions ----------------------------------------------------------------------------------------------------


def questions_load(corpus: Corpus, pages: dict[str, Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The corpus's questions, and the in-scope lines dropped because a page they name is not on disk (reported)."""
    if not corpus.questions_path.exists():
        return [], []
    kept, dropped = [], []
    for line in corpus.questions_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if not item.get("category"):  # the handbook's older lines: follow-ups have a history
            item["category"] = ("follow_up" if item.get("history") else "natural") if item["kind"] == "in" else "other"
        missing = [p for p in item.get("pages", []) if p not in pages]
        if missing:
            dropped.append({"id": item["id"], "missing_pages": missing})
            continue
        kept.append(item)
    return kept, dropped


def history_turns(item: dict[str, Any]) -> list[tuple[str, str]]:
    """The question's history as (role, text) turns: a list of earlier customer questions, or of [role, text]."""
    turns = []
    for turn in item.get("history") or []:
        if isinstance(turn, str):
            turns.append(("customer", turn))
        else:
            turns.append((str(turn[0]), str(turn[1])))
    return turns


# --- the bench's own database and workspaces -------------------------------------------------------------------


def django_setup() -> str:
    """Django, on the bench's own database `<db>_bench_quality` (created and migrated here) unless DATABASE_URL is
    exported or Django is already set up; its files under DATA_DIR/bench-quality/. Returns the database name."""
    import django
    from django.apps import apps

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    if not apps.ready and "DATABASE_URL" not in os.environ:
        from urllib.parse import urlsplit, urlunsplit

        from bench._support import DATA_DIR, database_prepare, services_env

        services = services_env()
        database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
        name = f"{database.path.lstrip('/') or 'customercare'}_bench_quality"
        redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        folder = DATA_DIR / "bench-quality"
        os.environ.update(
            DATABASE_URL=urlunsplit(database._replace(path=f"/{name}")),
            REDIS_URL=urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_QUALITY_REDIS_DB', '6')}")),
            CHROMA_PATH=str(folder / "chroma"), MEDIA_ROOT=str(folder / "media"),
            WORKSPACE_POOL_SIZE="1", WORKSPACE_POOL_REFILL="inline", LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
        )
        database_prepare(dict(os.environ))
    django.setup()
    from django.conf import settings

    return settings.DATABASES["default"]["NAME"]


def workspace_enter(corpus: Corpus) -> Any:
    """The corpus's bench workspace (created on first use, on the enterprise plan: no document limit), entered."""
    from django.db import connection

    from accounts.services import workspace_signup
    from tenants.models import Workspace
    from tenants.selectors import workspace_get

    connection.set_schema_to_public()
    workspace = workspace_get(slug=corpus.workspace_slug)
    if workspace is None:
        _user, result = workspace_signup(email=f"{corpus.workspace_slug}@example.test",
                                         password="bench-quality-password-1", workspace_name=f"Bench {corpus.name}",
                                         slug=corpus.workspace_slug, existing_user_ok=True)
        workspace = result.workspace
    Workspace.objects.filter(pk=workspace.pk).update(plan="enterprise")
    connection.set_tenant(workspace)
    return workspace


def _ingest(document: Any) -> Any:
    """The pipeline over one document, here; when another process holds its lock (`prepare` run from both ends of
    a corpus), wait for that run to finish."""
    from documents import pipeline

    deadline = time.monotonic() + 1800
    while True:
        try:
            return pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token)
        except pipeline.Busy:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
            document.refresh_from_db()


def corpus_index(corpus: Corpus, pages: dict[str, Path], *, log: Any = None, reverse: bool = False) -> dict[str, Any]:
    """Every page indexed in the corpus's workspace (inside it, on return). Returns the corpus's sizes, the ingest
    time of this run and `page_of`: document id → the page names with that content. `reverse`: last file first (a
    second `prepare` process can work from the other end)."""
    from django.core.files import File

    from config.errors import ApplicationError, ErrorCode
    from documents import services
    from documents.models import Document, DocumentStatus

    workspace_enter(corpus)
    started = time.perf_counter()
    by_digest: dict[str, list[tuple[str, str, bytes]]] = {}
    for page, path in pages.items():
        name, payload = upload_payload(page, path)
        by_digest.setdefault(hashlib.sha256(payload).hexdigest(), []).append((page, name, payload))
    stale = Document.objects.exclude(sha256__in=list(by_digest))
    removed = 0
    for document in stale:
        services.document_delete(document=document)
        removed += 1
    page_of: dict[int, list[str]] = {}
    ingested = 0
    order = list(by_digest.items())[::-1] if reverse else list(by_digest.items())
    for number, (digest, entries) in enumerate(order, start=1):
        page, name, payload = entries[0]
        document = Document.objects.filter(sha256=digest).first()
        if document is None:
            with tempfile.SpooledTemporaryFile() as handle:
                handle.write(payload)
                handle.seek(0)
                try:
                    document = services.document_upload(uploaded_file=File(handle, name=name))
                except ApplicationError as error:
                    if error.code != ErrorCode.DUPLICATE_DOCUMENT:
                        raise
                    document = Document.objects.get(pk=error.details["document_id"])
        if document.status != DocumentStatus.INDEXED:
            outcome = _ingest(document)
            ingested += 1
            if outcome.result not in ("indexed", "already_indexed"):
                raise RuntimeError(f"{corpus.name}/{page}: {outcome.result}")
            if log and ingested % 25 == 0:
                log(f"{corpus.name}: {number}/{len(by_digest)} files, {ingested} ingested now, "
                    f"{time.perf_counter() - started:.0f} s")
        page_of[document.pk] = [entry[0] for entry in entries]
    indexed = Document.objects.filter(status=DocumentStatus.INDEXED)
    return {
        "pages": len(pages), "documents": indexed.count(),
        "chunks": sum(indexed.values_list("chunk_count", flat=True)),
        "ingested_now": ingested, "removed_now": removed,
        "ingest_seconds": round(time.perf_counter() - started, 1), "page_of": page_of,
    }
