"""The providers the gateway can forward to, and where each one lives.

Every provider's base URL and deployment-wide key can be overridden from the
environment as `<NAME>_BASE_URL` and `<NAME>_API_KEY`.
"""

import os
from dataclasses import dataclass
from enum import StrEnum


class Dialect(StrEnum):
    """The wire protocol a provider speaks."""

    OPENAI = "openai"
    AZURE = "azure"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    label: str
    dialect: Dialect
    default_base_url: str

    @property
    def env_prefix(self) -> str:
        return self.name.upper()

    def base_url(self) -> str:
        return os.environ.get(f"{self.env_prefix}_BASE_URL") or self.default_base_url

    def deployment_key(self) -> str:
        return os.environ.get(f"{self.env_prefix}_API_KEY", "")


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("openai", "OpenAI", Dialect.OPENAI, "https://api.openai.com/v1"),
        ProviderSpec("azure", "Azure OpenAI", Dialect.AZURE, ""),
        ProviderSpec("anthropic", "Anthropic", Dialect.ANTHROPIC, "https://api.anthropic.com"),
        ProviderSpec("groq", "Groq", Dialect.OPENAI, "https://api.groq.com/openai/v1"),
        ProviderSpec("together", "Together", Dialect.OPENAI, "https://api.together.xyz/v1"),
        ProviderSpec("fireworks", "Fireworks", Dialect.OPENAI, "https://api.fireworks.ai/inference/v1"),
        ProviderSpec("mistral", "Mistral", Dialect.OPENAI, "https://api.mistral.ai/v1"),
        ProviderSpec("deepseek", "DeepSeek", Dialect.OPENAI, "https://api.deepseek.com/v1"),
        ProviderSpec("openrouter", "OpenRouter", Dialect.OPENAI, "https://openrouter.ai/api/v1"),
        ProviderSpec("xai", "xAI", Dialect.OPENAI, "https://api.x.ai/v1"),
        ProviderSpec(
            "gemini",
            "Gemini (OpenAI-compatible)",
            Dialect.OPENAI,
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
        # vLLM, Ollama and any other OpenAI-compatible server: set CUSTOM_BASE_URL or a per-org base URL.
        ProviderSpec("custom", "Custom OpenAI-compatible", Dialect.OPENAI, "http://127.0.0.1:11434/v1"),
    )
}

PROVIDER_CHOICES = [(spec.name, spec.label) for spec in PROVIDERS.values()]
