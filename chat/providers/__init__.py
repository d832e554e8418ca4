"""Answer providers behind one interface: LangChain chat models (`BaseChatModel.stream()`).

- `builtin` (default, always last): extractive answers from the retrieved passages, no network, no model download;
- `openai`: any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, LM Studio: base URL, key, model);
- `anthropic`: Anthropic's Messages API.

A workspace's AssistantSettings.providers is the ordered chain, e.g.
    [{"kind": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "llama3.1"},
     {"kind": "anthropic", "model": "claude-3-5-haiku-latest", "api_key_env": "ANTHROPIC_API_KEY"}]
and the built-in answerer is appended. See chain.py for the fallback rules and breaker.py for the circuit breaker.
"""
from chat.providers.base import (  # noqa: F401
    FailureCode,
    ProviderConfig,
    ProviderFailure,
    ProviderStream,
    provider_chain,
    provider_config_parse,
)
from chat.providers.breaker import breaker_reset, breaker_state  # noqa: F401
from chat.providers.builtin import BUILTIN_MODEL, BuiltinChatModel, builtin_compose  # noqa: F401
from chat.providers.chain import ChainEvent, ChainResult, chat_model_build, providers_stream  # noqa: F401
from chat.providers.pricing import answer_cost, token_count_estimate  # noqa: F401

__all__ = [
    "BUILTIN_MODEL", "BuiltinChatModel", "ChainEvent", "ChainResult", "FailureCode", "ProviderConfig",
    "ProviderFailure", "ProviderStream", "answer_cost", "breaker_reset", "breaker_state", "builtin_compose",
    "chat_model_build", "provider_chain", "provider_config_parse", "providers_stream", "token_count_estimate",
]
