"""Anthropic's Messages API."""
from __future__ import annotations

from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel

from chat.providers.base import ProviderConfig


def anthropic_chat_model(config: ProviderConfig) -> BaseChatModel:
    read = max(config.first_token_timeout, config.inter_token_timeout) + 5.0
    return ChatAnthropic(
        model=config.model,
        base_url=config.base_url,
        api_key=config.resolved_api_key() or "missing-key",
        temperature=config.temperature,
        max_tokens=config.max_tokens or 800,
        max_retries=0,
        default_request_timeout=read,  # one number here (the SDK's connect timeout stays at its default)
        streaming=True,
        stream_usage=True,
    )
