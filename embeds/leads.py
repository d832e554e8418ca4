"""Starter questions and the lead form of a widget: the rules for what staff configure and for what a visitor
sends (docs/widget.md "Starter questions" and "Lead form").

Staff settings are cleaned here and saved by embeds.services (embed_create / embed_update); a visitor's answers are
validated here against their widget's form and stored on the conversation by chat.services.conversation_lead_save.
"""
from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from config.errors import ValidationFailed
from embeds.errors import EmbedErrorCode
from embeds.theme import ThemeError, text_clean

MAX_STARTER_QUESTIONS = 6
MAX_STARTER_CHARS = 150
LEAD_FIELDS = ("name", "email", "phone", "custom")
LEAD_FIELD_STATES = ("off", "optional", "required")
LEAD_WHEN = ("off", "before_chat", "handoff")
MAX_CUSTOM_LABEL = 60
LEAD_MAX_CHARS = {"name": 200, "email": 254, "phone": 40, "custom": 500}
# Digits with the usual separators and an optional leading +; 6 to 20 digits (E.164 has at most 15, extensions more).
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()./-]*$")
LEAD_FORM_DEFAULT: dict[str, Any] = {"when": "off", "fields": {name: "off" for name in LEAD_FIELDS}, "custom_label": ""}


def starter_questions_clean(value: Any) -> tuple[list[str], list[str]]:
    """(the questions, errors): a list of at most 6 distinct non-empty questions of at most 150 characters; blank
    entries are dropped, so a textarea's empty lines don't count."""
    if isinstance(value, str):
        value = value.splitlines()
    if not isinstance(value, list):
        return [], ["A list of questions."]
    questions: list[str] = []
    errors: list[str] = []
    for item in value:
        if not isinstance(item, str):
            errors.append("Each question is text.")
            continue
        try:
            question = text_clean(item, max_chars=MAX_STARTER_CHARS)
        except ThemeError as error:
            errors.append(str(error))
            continue
        if question and question.casefold() not in {q.casefold() for q in questions}:
            questions.append(question)
    if len(questions) > MAX_STARTER_QUESTIONS:
        errors.append(f"At most {MAX_STARTER_QUESTIONS} starter questions.")
    return questions, errors


def lead_form_clean(value: Any) -> tuple[dict[str, Any], list[str]]:
    """(the form, errors). Missing keys keep their default (off); a form that is on asks for at least one field."""
    if not isinstance(value, dict):
        return dict(LEAD_FORM_DEFAULT), ["An object: when, fields, custom_label."]
    errors: list[str] = []
    unknown = sorted(set(value) - {"when", "fields", "custom_label"})
    if unknown:
        errors.append(f"Unknown keys: {', '.join(unknown)}.")
    when = value.get("when", "off")
    if when not in LEAD_WHEN:
        errors.append(f"`when` is one of {', '.join(LEAD_WHEN)}.")
        when = "off"
    fields_in = value.get("fields", {})
    fields: dict[str, str] = {name: "off" for name in LEAD_FIELDS}
    if not isinstance(fields_in, dict):
        errors.append("`fields` maps name, email, phone, custom to off, optional or required.")
    else:
        for name, state in fields_in.items():
            if name not in LEAD_FIELDS:
                errors.append(f"Unknown field {str(name)[:40]!r}; the fields are {', '.join(LEAD_FIELDS)}.")
            elif state not in LEAD_FIELD_STATES:
                errors.append(f"`{name}` is one of {', '.join(LEAD_FIELD_STATES)}.")
            else:
                fields[name] = state
    label = value.get("custom_label", "")
    try:
        label = text_clean(label if isinstance(label, str) else "", max_chars=MAX_CUSTOM_LABEL)
    except ThemeError as error:
        errors.append(str(error))
        label = ""
    if fields["custom"] != "off" and not label:
        errors.append("Name the custom field (custom_label), e.g. “Company” or “Order number”.")
    if when != "off" and all(state == "off" for state in fields.values()):
        errors.append("Ask for at least one field, or turn the form off.")
    return {"when": when, "fields": fields, "custom_label": label}, errors


def lead_form_public(form: dict[str, Any]) -> dict[str, Any]:
    """The form as the frame draws it (a stored form may predate a key: defaults fill it)."""
    cleaned, _errors = lead_form_clean({**LEAD_FORM_DEFAULT, **(form or {})})
    return cleaned


def lead_values_clean(*, form: dict[str, Any], data: Any) -> dict[str, str]:
    """A visitor's answers, checked against their widget's form: {name, email, phone, custom} (only the fields the
    form asks for). Raises ValidationFailed `lead_form_off` when the widget has no form, `lead_invalid` with
    every field's problem at once (details.fields) otherwise."""
    form = lead_form_public(form)
    if form["when"] == "off":
        raise ValidationFailed("This widget has no lead form.", code=EmbedErrorCode.LEAD_FORM_OFF)
    if not isinstance(data, dict):
        raise ValidationFailed("`lead` is an object of the form's fields.", code=EmbedErrorCode.LEAD_INVALID,
                               details={"fields": {"lead": ["An object."]}})
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name in sorted(set(data) - set(LEAD_FIELDS)):
        errors[str(name)[:40]] = ["Not a field of this form."]
    for name in LEAD_FIELDS:
        state = form["fields"][name]
        raw = data.get(name)
        if state == "off":
            if raw not in (None, ""):
                errors[name] = ["This form does not ask for it."]
            continue
        if raw is not None and not isinstance(raw, str):
            errors[name] = ["Text."]
            continue
        text = " ".join((raw or "").split())
        if not text:
            if state == "required":
                errors[name] = ["Required."]
            continue
        if len(text) > LEAD_MAX_CHARS[name] or "\x00" in text:
            errors[name] = [f"At most {LEAD_MAX_CHARS[name]} characters."]
            continue
        if name == "email":
            try:
                validate_email(text)
            except DjangoValidationError:
                errors[name] = ["Enter a valid email address."]
                continue
        if name == "phone":
            digits = sum(ch.isdigit() for ch in text)
            if not PHONE_RE.match(text) or not 6 <= digits <= 20:
                errors[name] = ["Enter a phone number: digits, spaces, + ( ) - . / only."]
                continue
        values[name] = text
    if errors:
        raise ValidationFailed("Please check the form.", code=EmbedErrorCode.LEAD_INVALID,
                               details={"fields": errors})
    return values
