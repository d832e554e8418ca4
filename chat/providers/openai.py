"""OpenAI-compatible chat endpoints: OpenAI itself, Ollama, vLLM, LM Studio (base URL, key, model)."""
from __future__ import annotations

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from chat.providers.base import ProviderConfig


def openai_chat_model(config: ProviderConfig) -> BaseChatModel:
    # The SDK's own retries would hide a failing vendor from the fallback chain and the breaker: none here.
    # The HTTP read timeout is only a backstop for the helper thread; ProviderStream enforces the real deadlines.
    read = max(config.first_token_timeout, config.inter_token_timeout) + 5.0
    return ChatOpenAI(
        model=config.model,
        base_url=config.base_url,
        # Local servers (Ollama, vLLM, LM Studio) accept any key; the SDK insists on one.
        api_key=config.resolved_api_key() or "not-needed",
        temperature=config.temperature,
        max_tokens=config.max_tokens or None,
        max_retries=0,
        timeout=httpx.Timeout(connect=config.connect_timeout, read=read, write=10.0, pool=config.connect_timeout),
        streaming=True,
        stream_usage=True,
    )
