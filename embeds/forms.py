"""The dashboard's widget form. It only shapes input; embeds.services validates it (the same rules as the API and
the operator command) and its errors are put back on the fields here."""
from __future__ import annotations

from typing import Any

from django import forms

from config.errors import ValidationFailed
from embeds.leads import LEAD_FIELD_STATES, LEAD_FIELDS, LEAD_WHEN, MAX_CUSTOM_LABEL, lead_form_public
from embeds.models import Embed
from embeds.theme import (
    BEHAVIOUR_DEFAULTS,
    LANGUAGES,
    LAUNCHER_ICONS,
    MAX_GREETING,
    MAX_PLACEHOLDER,
    MAX_TITLE,
    POSITIONS,
    THEME_DEFAULTS,
)

THEME_FIELDS = tuple(THEME_DEFAULTS)
BEHAVIOUR_FIELDS = tuple(BEHAVIOUR_DEFAULTS)
LANGUAGE_LABELS = {"auto": "The visitor's browser language (English or German)", "en": "English", "de": "German"}
ICON_LABELS = {"chat": "Speech bubble", "help": "Question mark", "message": "Envelope"}


class ColorInput(forms.TextInput):
    input_type = "color"


class EmbedForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="For you: e.g. the website the widget is on.")
    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocapitalize": "off"}),
        help_text="One per line: the sites that may show the widget, e.g. https://shop.example or "
                  "https://*.shop.example for its subdomains. Every other site gets nothing.",
    )
    title = forms.CharField(max_length=MAX_TITLE, required=False, help_text="Shown at the top of the chat.")
    greeting = forms.CharField(max_length=MAX_GREETING, required=False,
                               widget=forms.Textarea(attrs={"rows": 2}), help_text="The first thing visitors read.")
    placeholder = forms.CharField(max_length=MAX_PLACEHOLDER, required=False, label="Input placeholder")
    color_primary = forms.CharField(label="Main colour", widget=ColorInput)
    color_background = forms.CharField(label="Background colour", widget=ColorInput)
    color_text = forms.CharField(label="Text colour", widget=ColorInput)
    position = forms.ChoiceField(choices=[(p, p.replace("-", " ").capitalize()) for p in POSITIONS])
    launcher_icon = forms.ChoiceField(choices=[(i, ICON_LABELS[i]) for i in LAUNCHER_ICONS])
    avatar_url = forms.CharField(max_length=500, required=False, label="Avatar image URL",
                                 help_text="https:// only.")
    language = forms.ChoiceField(choices=[(code, LANGUAGE_LABELS[code]) for code in LANGUAGES])
    auto_open = forms.BooleanField(required=False, label="Open the chat by itself when the page loads")
    show_sources = forms.BooleanField(required=False, label="Show the sources of answers")
    collect_email = forms.BooleanField(required=False, label="Ask for the visitor's email (optional for them)")
    offer_human = forms.BooleanField(required=False, label="Offer “talk to a person”")
    show_followups = forms.BooleanField(
        required=False, label="Suggest up to 3 follow-up questions after an answer",
        help_text="Drawn from the starter questions the knowledge base answers, closest to what was asked first.")
    starter_questions = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line, at most 6: shown as buttons before the first message and after an unanswered "
                  "question. Clicking one asks it.")
    lead_when = forms.ChoiceField(
        required=False, label="Lead form", initial="off",
        choices=[("off", "Off"), ("before_chat", "Before the chat starts"),
                 ("handoff", "When the visitor asks for a person")])
    lead_name = forms.ChoiceField(required=False, label="Lead form: name", initial="off",
                                  choices=[(s, s.capitalize()) for s in LEAD_FIELD_STATES])
    lead_email = forms.ChoiceField(required=False, label="Lead form: email", initial="off",
                                   choices=[(s, s.capitalize()) for s in LEAD_FIELD_STATES])
    lead_phone = forms.ChoiceField(required=False, label="Lead form: phone", initial="off",
                                   choices=[(s, s.capitalize()) for s in LEAD_FIELD_STATES])
    lead_custom = forms.ChoiceField(required=False, label="Lead form: your own field", initial="off",
                                    choices=[(s, s.capitalize()) for s in LEAD_FIELD_STATES])
    lead_custom_label = forms.CharField(required=False, max_length=MAX_CUSTOM_LABEL, label="Your own field's label",
                                        help_text="E.g. “Company” or “Order number”.")

    @classmethod
    def for_embed(cls, embed: Embed | None, data: Any = None) -> EmbedForm:
        initial: dict[str, Any] = {**THEME_DEFAULTS, **BEHAVIOUR_DEFAULTS}
        if embed is not None:
            lead_form = lead_form_public(embed.lead_form)
            initial.update(embed.theme(), **embed.behaviour(), name=embed.name,
                           allowed_origins="\n".join(embed.allowed_origins),
                           starter_questions="\n".join(embed.starter_questions or []),
                           lead_when=lead_form["when"], lead_custom_label=lead_form["custom_label"],
                           **{f"lead_{name}": lead_form["fields"][name] for name in LEAD_FIELDS})
        return cls(data=data, initial=initial)

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "allowed_origins": data["allowed_origins"],
            "theme": {name: data[name] for name in THEME_FIELDS},
            "behaviour": {name: bool(data[name]) for name in BEHAVIOUR_FIELDS},
            "starter_questions": data.get("starter_questions") or "",
            "lead_form": {
                "when": data.get("lead_when") or LEAD_WHEN[0],
                "fields": {name: data.get(f"lead_{name}") or "off" for name in LEAD_FIELDS},
                "custom_label": data.get("lead_custom_label") or "",
            },
        }

    def add_service_errors(self, error: ValidationFailed) -> None:
        fields = error.details.get("fields") or {}
        placed = False
        for name, messages in fields.items():
            if name in ("theme", "behaviour") and isinstance(messages, dict):
                for sub, sub_messages in messages.items():
                    for message in sub_messages:
                        self.add_error(sub if sub in self.fields else None, message)
                        placed = True
            elif isinstance(messages, list):
                target = "lead_when" if name == "lead_form" else name
                for message in messages:
                    self.add_error(target if target in self.fields else None, message)
                    placed = True
        if not placed:
            self.add_error(None, error.message)
