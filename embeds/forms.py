"""The dashboard's widget form. It only shapes input; embeds.services validates it (the same rules as the API and
the operator command) and its errors are put back on the fields here."""
from __future__ import annotations

from typing import Any

from django import forms

from config.errors import ValidationFailed
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

    @classmethod
    def for_embed(cls, embed: Embed | None, data: Any = None) -> EmbedForm:
        initial: dict[str, Any] = {**THEME_DEFAULTS, **BEHAVIOUR_DEFAULTS}
        if embed is not None:
            initial.update(embed.theme(), **embed.behaviour(), name=embed.name,
                           allowed_origins="\n".join(embed.allowed_origins))
        return cls(data=data, initial=initial)

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "allowed_origins": data["allowed_origins"],
            "theme": {name: data[name] for name in THEME_FIELDS},
            "behaviour": {name: bool(data[name]) for name in BEHAVIOUR_FIELDS},
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
                for message in messages:
                    self.add_error(name if name in self.fields else None, message)
                    placed = True
        if not placed:
            self.add_error(None, error.message)
