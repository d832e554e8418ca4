"""One corpus of hostile input, shared by every suite that feeds text, files or settings to the product.

Each entry is (name, value). Suites send them wherever a user or integrator can put text (API fields, query
parameters, widget messages, settings, file names) and assert the same two things: never a 5xx, and an error is in
the project's error shape; what is accepted is stored and returned unchanged (nothing lost, nothing executed).
"""
from __future__ import annotations

HOSTILE_TEXT: list[tuple[str, str]] = [
    ("empty", ""),
    ("blank", "   \t\n "),
    ("nul", "\x00"),
    ("nul-inside", "refund\x00policy"),
    ("lone-surrogate", "\ud800"),
    ("surrogate-pair-split", "a\udc00b"),
    ("control-chars", "".join(chr(c) for c in range(1, 32))),
    ("script-tag", "<script>alert(document.cookie)</script>"),
    ("img-onerror", '"><img src=x onerror=alert(1)>'),
    ("sql", "'; DROP TABLE chat_message; --"),
    ("sql-union", "1 UNION SELECT password FROM accounts_user"),
    ("path-traversal", "../../../../etc/passwd"),
    ("percent-nul", "%00"),
    ("crlf-injection", "x\r\nSet-Cookie: session=stolen"),
    ("template", "{{ settings.SECRET_KEY }}{% debug %}"),
    ("jndi", "${jndi:ldap://127.0.0.1/a}"),
    ("csv-formula", "=HYPERLINK(\"http://evil\",\"click\")"),
    ("rtl-override", "invoice\u202egpj.exe"),
    ("zero-width", "pass\u200bword\ufeff"),
    ("emoji", "😀👍🏽👨‍👩‍👧‍👦" * 50),
    ("combining", "Z\u0351\u0352\u0353" * 200),
    ("long-100k", "A" * 100_000),
    ("long-word-1m", "x" * 1_000_000),
    ("json-like", '{"__proto__": {"admin": true}}'),
    ("unicode-mixed", "日本語 العربية עברית Ελληνικά"),
]

HOSTILE_FILENAMES: list[str] = [
    "../../evil.txt", "..\\..\\evil.txt", "/etc/passwd", "a\x00.txt", "CON.txt", "x" * 400 + ".txt",
    "<script>.txt", "invoice\u202etxt.exe", ".htaccess",
]
