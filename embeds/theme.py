"""A widget's look and words: validation of every theme field, and the strings of the widget in each language.

Theme values end up in three places that each parse differently: CSS custom properties (colours), HTML attributes
(the avatar URL) and text (title, greeting, placeholder). So each field is validated for what it is, not escaped
later for where it goes: a colour is `#rgb` or `#rrggbb` and nothing else (no `red;}body{...`), the avatar is an
https URL, texts are plain text with no control characters. Texts are still rendered as text everywhere.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator

COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
POSITIONS = ("bottom-right", "bottom-left")
LAUNCHER_ICONS = ("chat", "help", "message")
LANGUAGES = ("auto", "en", "de")
MAX_TITLE = 60
MAX_GREETING = 500
MAX_PLACEHOLDER = 100
MAX_AVATAR_URL = 500

THEME_DEFAULTS: dict[str, Any] = {
    "color_primary": "#2563eb",
    "color_background": "#ffffff",
    "color_text": "#111827",
    "position": "bottom-right",
    "title": "",
    "avatar_url": "",
    "greeting": "",
    "placeholder": "",
    "launcher_icon": "chat",
    "language": "auto",
}
BEHAVIOUR_DEFAULTS: dict[str, bool] = {
    "auto_open": False,
    "show_sources": True,
    "collect_email": False,
    "offer_human": True,
    "show_followups": False,  # up to 3 follow-up chips after an answer (embeds.followups)
}

_https_url = URLValidator(schemes=["https"])
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn"}


class ThemeError(ValueError):
    pass


def color_clean(value: Any) -> str:
    if not isinstance(value, str) or not COLOR_RE.match(value.strip()):
        raise ThemeError("Use a colour like #2563eb or #fff.")
    return value.strip().lower()


def avatar_url_clean(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ThemeError("Use an https:// image URL.")
    url = value.strip()
    if len(url) > MAX_AVATAR_URL:
        raise ThemeError(f"At most {MAX_AVATAR_URL} characters.")
    if any(ch.isspace() or ch in "\"'<>\\`" for ch in url):
        raise ThemeError("Use an https:// image URL.")
    try:
        _https_url(url)
    except DjangoValidationError:
        raise ThemeError("Use an https:// image URL.") from None
    if "@" in url.split("/", 3)[2]:
        raise ThemeError("The URL may not contain a user name or password.")
    return url


def text_clean(value: Any, *, max_chars: int, multiline: bool = False) -> str:
    """Plain text: no control or invisible characters (newlines only where `multiline`), collapsed spaces."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ThemeError("Use text.")
    text = unicodedata.normalize("NFC", value)
    kept = []
    for ch in text:
        if ch == "\n" and multiline:
            kept.append(ch)
        elif ch in "\r\t\n" or unicodedata.category(ch) in _INVISIBLE:
            kept.append(" ")
        else:
            kept.append(ch)
    text = "".join(kept)
    if multiline:
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
    else:
        text = " ".join(text.split())
    if len(text) > max_chars:
        raise ThemeError(f"At most {max_chars} characters.")
    return text


def choice_clean(value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ThemeError(f"One of {', '.join(choices)}.")
    return value


_THEME_CLEANERS = {
    "color_primary": color_clean,
    "color_background": color_clean,
    "color_text": color_clean,
    "position": lambda v: choice_clean(v, POSITIONS),
    "title": lambda v: text_clean(v, max_chars=MAX_TITLE),
    "avatar_url": avatar_url_clean,
    "greeting": lambda v: text_clean(v, max_chars=MAX_GREETING, multiline=True),
    "placeholder": lambda v: text_clean(v, max_chars=MAX_PLACEHOLDER),
    "launcher_icon": lambda v: choice_clean(v, LAUNCHER_ICONS),
    "language": lambda v: choice_clean(v, LANGUAGES),
}


def theme_clean(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(the cleaned subset of `values` that names theme fields, errors per field). Unknown keys are errors."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        cleaner = _THEME_CLEANERS.get(name)
        if cleaner is None:
            errors[name] = ["Unknown theme field."]
            continue
        try:
            cleaned[name] = cleaner(value)
        except ThemeError as error:
            errors[name] = [str(error)]
    return cleaned, errors


def behaviour_clean(values: dict[str, Any]) -> tuple[dict[str, bool], dict[str, list[str]]]:
    cleaned: dict[str, bool] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        if name not in BEHAVIOUR_DEFAULTS:
            errors[name] = ["Unknown behaviour field."]
        elif not isinstance(value, bool):
            errors[name] = ["true or false."]
        else:
            cleaned[name] = value
    return cleaned, errors


def contrast_text(color: str) -> str:
    """Black or white, whichever reads better on `color` (WCAG relative luminance)."""
    hex_part = color.lstrip("#")
    if len(hex_part) == 3:
        hex_part = "".join(ch * 2 for ch in hex_part)
    channels = []
    for i in (0, 2, 4):
        c = int(hex_part[i:i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    luminance = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]
    return "#111111" if luminance > 0.179 else "#ffffff"


# --- the widget's own words ------------------------------------------------------------------------------------
STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Chat with us",
        "open": "Open the chat",
        "close": "Close the chat",
        "greeting": "Hi! Ask us anything — we answer from our help articles, with sources.",
        "placeholder": "Type your question…",
        "send": "Send",
        "your_message": "Your message",
        "you": "You",
        "assistant": "Assistant",
        "agent": "Support team",
        "system": "Notice",
        "sources": "Sources",
        "helpful": "Helpful",
        "not_helpful": "Not helpful",
        "thanks_feedback": "Thanks for your feedback.",
        "talk_to_human": "Talk to a person",
        "human_requested": "We've asked a person from our team to join. They'll reply here.",
        "human_nobody": "Nobody from our team is available right now. Leave your email and we'll reply as soon as we can.",
        "email_send": "Send",
        "email_saved": "Thanks — we'll reply to {email}.",
        "typing": "The assistant is typing…",
        "agent_typing": "Someone from our team is typing…",
        "searching": "Searching our help articles…",
        "offline": "You're offline. We'll reconnect as soon as you're back.",
        "reconnecting": "Connection lost — reconnecting…",
        "connected": "Connected.",
        "rate_limited": "You're sending messages a little too fast. Please wait {seconds} s and try again.",
        "unavailable": "The chat isn't available on this page.",
        "error": "Something went wrong. Please try again.",
        "answer_failed": "Sorry, we couldn't answer that just now. Please try again, or ask for a person.",
        "too_long": "That message is too long (at most {max} characters).",
        "new_conversation": "New conversation",
        "conversations": "Your conversations",
        "back": "Back to the chat",
        "no_conversations": "No earlier conversations.",
        "email_label": "Your email (optional)",
        "email_hint": "So we can reply if you leave.",
        "closed": "This conversation is closed. Start a new one to ask again.",
        "untitled": "Conversation",
        "verified": "Signed in",
        "starters": "You could ask…",
        "starters_label": "Suggested questions",
        "followups": "You might also ask…",
        "followups_label": "Follow-up questions",
        "lead_intro": "Before we start: how can we reach you?",
        "lead_intro_handoff": "So our team can get back to you: how can we reach you?",
        "lead_name": "Name",
        "lead_email": "Email",
        "lead_phone": "Phone",
        "lead_optional": "(optional)",
        "lead_start": "Start the chat",
        "lead_send": "Send",
        "lead_required": "Please fill this in.",
        "lead_email_invalid": "Please enter a valid email address.",
        "lead_saved": "Thanks — we have your details.",
        "opens_new_tab": "opens in a new tab",
        "related_sources": "Related",
    },
    "de": {
        "title": "Schreiben Sie uns",
        "open": "Chat öffnen",
        "close": "Chat schließen",
        "greeting": "Hallo! Fragen Sie uns alles – wir antworten aus unseren Hilfeartikeln, mit Quellen.",
        "placeholder": "Ihre Frage…",
        "send": "Senden",
        "your_message": "Ihre Nachricht",
        "you": "Sie",
        "assistant": "Assistent",
        "agent": "Support-Team",
        "system": "Hinweis",
        "sources": "Quellen",
        "helpful": "Hilfreich",
        "not_helpful": "Nicht hilfreich",
        "thanks_feedback": "Danke für Ihr Feedback.",
        "talk_to_human": "Mit einem Menschen sprechen",
        "human_requested": "Wir haben jemanden aus unserem Team gebeten, dazuzukommen. Die Antwort erscheint hier.",
        "human_nobody": "Gerade ist niemand aus unserem Team erreichbar. Hinterlassen Sie Ihre E-Mail, wir antworten so bald wie möglich.",
        "email_send": "Senden",
        "email_saved": "Danke – wir antworten an {email}.",
        "typing": "Der Assistent schreibt…",
        "agent_typing": "Jemand aus unserem Team schreibt…",
        "searching": "Wir durchsuchen unsere Hilfeartikel…",
        "offline": "Sie sind offline. Sobald Sie wieder online sind, verbinden wir neu.",
        "reconnecting": "Verbindung unterbrochen – wir verbinden neu…",
        "connected": "Verbunden.",
        "rate_limited": "Sie senden etwas zu schnell. Bitte warten Sie {seconds} s und versuchen Sie es erneut.",
        "unavailable": "Der Chat ist auf dieser Seite nicht verfügbar.",
        "error": "Etwas ist schiefgelaufen. Bitte versuchen Sie es erneut.",
        "answer_failed": "Das konnten wir gerade nicht beantworten. Bitte versuchen Sie es erneut oder fragen Sie "
                         "nach einem Menschen.",
        "too_long": "Die Nachricht ist zu lang (höchstens {max} Zeichen).",
        "new_conversation": "Neues Gespräch",
        "conversations": "Ihre Gespräche",
        "back": "Zurück zum Chat",
        "no_conversations": "Keine früheren Gespräche.",
        "email_label": "Ihre E-Mail (optional)",
        "email_hint": "Damit wir antworten können, falls Sie gehen.",
        "closed": "Dieses Gespräch ist beendet. Beginnen Sie ein neues, um erneut zu fragen.",
        "untitled": "Gespräch",
        "verified": "Angemeldet",
        "starters": "Sie könnten fragen …",
        "starters_label": "Vorgeschlagene Fragen",
        "followups": "Sie könnten auch fragen …",
        "followups_label": "Anschlussfragen",
        "lead_intro": "Bevor es losgeht: Wie erreichen wir Sie?",
        "lead_intro_handoff": "Damit sich unser Team bei Ihnen meldet: Wie erreichen wir Sie?",
        "lead_name": "Name",
        "lead_email": "E-Mail",
        "lead_phone": "Telefon",
        "lead_optional": "(optional)",
        "lead_start": "Chat starten",
        "lead_send": "Senden",
        "lead_required": "Bitte ausfüllen.",
        "lead_email_invalid": "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "lead_saved": "Danke – wir haben Ihre Angaben.",
        "opens_new_tab": "öffnet in einem neuen Tab",
        "related_sources": "Weitere Quellen",
    },
}
SUPPORTED_LANGUAGES = tuple(STRINGS)


def language_resolve(*, configured: str, requested: str | None = None, accept_language: str = "") -> str:
    """The widget's language: the embed's fixed one, else the visitor's browser language when we speak it, else
    English."""
    if configured in STRINGS:
        return configured
    for candidate in [requested or ""] + [part.split(";")[0] for part in accept_language.split(",")]:
        code = candidate.strip().lower()[:2]
        if code in STRINGS:
            return code
    return "en"


def strings_for(language: str) -> dict[str, str]:
    return STRINGS.get(language, STRINGS["en"])
