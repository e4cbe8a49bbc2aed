"""A minimal client for any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenRouter, ...).

It posts ``{"model", "messages", "temperature", "max_tokens"}`` to ``{base_url}/chat/completions``
and returns ``choices[0].message.content``. The standard library's ``urllib`` does the HTTP, so
the LLM path needs no extra dependency. Failures are one-line errors saying what failed:

- :class:`LLMUnavailable`: the endpoint could not be used at all (refused connection, DNS,
  timeout, an HTTP error status). Callers stop asking it and fall back to offline results.
- :class:`LLMReplyError`: it answered, but not with something usable for this request.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from ..errors import MonosemanticError


class LLMUnavailable(MonosemanticError):
    """The endpoint could not be reached or refused the request."""


class LLMReplyError(MonosemanticError):
    """The endpoint answered with something that is not a usable reply."""


class OpenAIClient:
    """Chat completions from ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``) with ``model``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_tokens: int = 400, temperature: float = 0.0):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise MonosemanticError(f"LLM base URL {base_url!r} is not an http(s) URL; pass e.g. "
                                    "http://127.0.0.1:8000/v1")
        if not model:
            raise MonosemanticError("no LLM model name given; pass the name the endpoint serves, e.g. --llm-model "
                                    "llama-3.1-8b-instruct")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, float(timeout)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)

    @classmethod
    def from_env(cls, base_url: str, model: str, key_env: str | None = None, **kwargs) -> OpenAIClient:
        """A client whose API key is read from the environment variable ``key_env`` (if given)."""
        key = None
        if key_env:
            key = os.environ.get(key_env)
            if not key:
                raise MonosemanticError(f"environment variable {key_env} is not set or empty; export the API key "
                                        "in it, or leave out --llm-key-env for an endpoint without a key")
        return cls(base_url, model, key, **kwargs)

    def describe(self) -> dict:
        """What identifies the client in results (never the key)."""
        return {"url": self.url, "model": self.model, "temperature": self.temperature}

    def chat(self, messages: list[dict]) -> str:
        """The assistant's reply text to ``messages`` (``[{"role": ..., "content": ...}, ...]``)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode("utf-8", "replace").strip()
            hint = "check the API key (--llm-key-env)" if e.code in (401, 403) else \
                "check --llm-url (it should end in /v1) and --llm-model"
            raise LLMUnavailable(f"LLM endpoint {self.url} answered HTTP {e.code} {e.reason}: {detail!r}; "
                                 f"{hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise LLMUnavailable(f"could not reach the LLM endpoint {self.url} ({reason}); check that the server is "
                                 "running and --llm-url is right, or leave out --llm-url to use the offline "
                                 "explainer") from None
        return self._content(raw)

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            shown = raw[:200].decode("utf-8", "replace")
            raise LLMReplyError(f"LLM endpoint {self.url} replied {shown!r}, not an OpenAI chat completion "
                                "(choices[0].message.content); is it an OpenAI-compatible server?") from None
        if not isinstance(content, str) or not content.strip():
            raise LLMReplyError(f"LLM endpoint {self.url} replied with empty content; try another --llm-model")
        return content
