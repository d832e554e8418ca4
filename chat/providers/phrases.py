"""The few fixed sentences the assistant says itself (declining, greeting), in the customer's language.

`language` is AssistantSettings.language: a code ("en", "de", ...) or "auto", which guesses from the question with a
stop-word count (good enough to pick one of these few phrases; the answers themselves come from the documents or the
model, which answer in the question's language).
"""
from __future__ import annotations

import re

DECLINE = {
    "en": "I'm sorry, I couldn't find anything about that in our documentation, so I can't give you a reliable "
          "answer. Would you like me to connect you with someone from our team?",
    "de": "Das tut mir leid, dazu habe ich in unserer Dokumentation nichts gefunden, daher kann ich Ihnen keine "
          "verlässliche Antwort geben. Soll ich Sie mit jemandem aus unserem Team verbinden?",
    "fr": "Désolé, je n'ai rien trouvé à ce sujet dans notre documentation, je ne peux donc pas vous donner de "
          "réponse fiable. Voulez-vous que je vous mette en relation avec quelqu'un de notre équipe ?",
    "es": "Lo siento, no he encontrado nada sobre eso en nuestra documentación, así que no puedo darle una "
          "respuesta fiable. ¿Quiere que le ponga en contacto con alguien de nuestro equipo?",
    "it": "Mi dispiace, non ho trovato nulla al riguardo nella nostra documentazione, quindi non posso darle una "
          "risposta affidabile. Vuole che la metta in contatto con qualcuno del nostro team?",
    "pt": "Desculpe, não encontrei nada sobre isso na nossa documentação, por isso não posso dar uma resposta "
          "confiável. Quer que eu o coloque em contato com alguém da nossa equipe?",
    "nl": "Sorry, ik heb daarover niets gevonden in onze documentatie, dus ik kan u geen betrouwbaar antwoord geven. "
          "Zal ik u in contact brengen met iemand van ons team?",
}
# Said after the answer to the parts of a multi-part question the documents do cover; {parts} names the others.
PARTIAL_DECLINE = {
    "en": "I couldn't find anything in our documentation about {parts}. Would you like me to connect you with "
          "someone from our team for that?",
    "de": "Zu {parts} habe ich in unserer Dokumentation nichts gefunden. Soll ich Sie dafür mit jemandem aus "
          "unserem Team verbinden?",
    "fr": "Je n'ai rien trouvé dans notre documentation sur {parts}. Voulez-vous que je vous mette en relation "
          "avec quelqu'un de notre équipe pour cela ?",
    "es": "No he encontrado nada en nuestra documentación sobre {parts}. ¿Quiere que le ponga en contacto con "
          "alguien de nuestro equipo para eso?",
    "it": "Non ho trovato nulla nella nostra documentazione su {parts}. Vuole che la metta in contatto con "
          "qualcuno del nostro team per questo?",
    "pt": "Não encontrei nada na nossa documentação sobre {parts}. Quer que eu o coloque em contato com alguém "
          "da nossa equipe para isso?",
    "nl": "Over {parts} heb ik niets gevonden in onze documentatie. Zal ik u daarvoor in contact brengen met "
          "iemand van ons team?",
}
GREETING = {
    "en": "Hello! What can I help you with?",
    "de": "Hallo! Wobei kann ich Ihnen helfen?",
    "fr": "Bonjour ! Comment puis-je vous aider ?",
    "es": "¡Hola! ¿En qué puedo ayudarle?",
    "it": "Ciao! Come posso aiutarla?",
    "pt": "Olá! Em que posso ajudar?",
    "nl": "Hallo! Waarmee kan ik u helpen?",
}
THANKS = {
    "en": "You're welcome! Is there anything else I can help you with?",
    "de": "Gern geschehen! Kann ich Ihnen sonst noch helfen?",
    "fr": "Avec plaisir ! Puis-je vous aider pour autre chose ?",
    "es": "¡De nada! ¿Puedo ayudarle en algo más?",
    "it": "Prego! Posso aiutarla in qualcos'altro?",
    "pt": "De nada! Posso ajudar em mais alguma coisa?",
    "nl": "Graag gedaan! Kan ik u nog ergens anders mee helpen?",
}

_STOPWORDS = {
    "en": {"the", "is", "how", "what", "do", "i", "can", "my", "to", "and", "of", "a", "in", "it", "you", "does"},
    "de": {"der", "die", "das", "ist", "wie", "ich", "und", "nicht", "ein", "eine", "mit", "kann", "was", "mein"},
    "fr": {"le", "la", "les", "est", "comment", "je", "et", "un", "une", "des", "pour", "mon", "que", "ne", "pas"},
    "es": {"el", "la", "los", "es", "cómo", "como", "yo", "y", "un", "una", "para", "mi", "que", "puedo", "qué"},
    "it": {"il", "lo", "la", "è", "come", "io", "e", "un", "una", "per", "mio", "che", "posso", "non", "gli"},
    "pt": {"o", "a", "os", "é", "como", "eu", "e", "um", "uma", "para", "meu", "que", "posso", "não", "do"},
    "nl": {"de", "het", "is", "hoe", "ik", "en", "een", "voor", "mijn", "dat", "kan", "niet", "wat", "van"},
}
_WORD = re.compile(r"\w+", re.UNICODE)


def language_pick(setting: str, text: str) -> str:
    setting = (setting or "auto").lower().split("-")[0]
    if setting in DECLINE:
        return setting
    words = _WORD.findall(text.lower())
    best, best_hits = "en", 0
    for code, stopwords in _STOPWORDS.items():
        hits = sum(1 for word in words if word in stopwords)
        if hits > best_hits:
            best, best_hits = code, hits
    return best


def decline_text(language: str) -> str:
    return DECLINE.get(language, DECLINE["en"])


def partial_decline_text(language: str, parts: list[str]) -> str:
    """The note after a multi-part answer naming the parts the documents don't cover, each quoted."""
    quoted = ", ".join(f"\u201c{part.rstrip('?').strip()}\u201d" for part in parts)
    return PARTIAL_DECLINE.get(language, PARTIAL_DECLINE["en"]).format(parts=quoted)


_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hallo|bonjour|salut|hola|ciao|olá|ola|good (morning|afternoon|evening)|guten (tag|morgen))"
    r"( there)?[\s!.,]*$", re.IGNORECASE)
_THANKS = re.compile(
    r"^\s*((thanks?|thank you|thx|ty|cheers|danke|merci|gracias|grazie|obrigad[oa]|bedankt)"
    r"( (a lot|very much|so much|schön|beaucoup|mille))?|great,? thanks?|perfect,? thanks?|ok,? thanks?)[\s!.,]*$",
    re.IGNORECASE)


def small_talk_reply(question: str, language: str) -> str | None:
    """A friendly fixed reply to a bare greeting or thanks (nothing to look up)."""
    if _GREETING.match(question):
        return GREETING.get(language, GREETING["en"])
    if _THANKS.match(question):
        return THANKS.get(language, THANKS["en"])
    return None
