"""Remote backends: a serving engine (vLLM, llama.cpp's server, Ollama, TGI) over HTTP.

Nothing here imports torch or transformers; a server set to a remote backend starts in about
a second. Prompts, caches, dismissals, ranking, trimming and stats stay in wisp, on the laptop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from model_runtime.backend import ModelLoadError
from model_runtime.remote.apis import APIS, DEFAULT_ENDPOINTS, Api, model_ids
from model_runtime.remote.backend import RemoteBackend
from model_runtime.remote.http import Endpoint, RemoteError, StreamingClient
from model_runtime.templates import TEMPLATES, FimTemplate, template_for_model_name

__all__ = ["APIS", "RemoteBackend", "RemoteOptions", "load_remote"]

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 2.0
# llama.cpp's /infill writes the FIM prompt with its model's own tokens: wisp only needs to know
# that the code after the cursor goes along (it budgets prefix and suffix the same way).
SERVER_FIM = FimTemplate("server-infill", "psm")


@dataclass(frozen=True)
class RemoteOptions:
    """Where the serving engine is and how to talk to it (the `backend` settings)."""

    api: Api
    endpoint: str | None = None  # None: the engine's default port on this machine
    model: str | None = None  # None: the first model the server lists (openai), if it answers
    api_key_env: str | None = None  # the environment variable that holds the API key
    timeout_s: float = 5.0
    fim_template: str | None = None  # None: from the model's name
    extra_body: dict[str, Any] = field(default_factory=dict)


def load_remote(options: RemoteOptions) -> RemoteBackend:
    """A remote backend, checked for what can be checked without the server.

    Raises ModelLoadError for a bad endpoint, a missing API key variable or a missing model name
    (Ollama needs one). A server that is down is not an error here: requests try it each time.
    """
    if options.api not in APIS:
        raise ModelLoadError(f"unknown backend {options.api!r}; choose one of {', '.join(APIS)}")
    try:
        endpoint = Endpoint.parse(options.endpoint or DEFAULT_ENDPOINTS[options.api])
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    headers = {}
    if options.api_key_env:
        key = os.environ.get(options.api_key_env)
        if not key:
            raise ModelLoadError(
                f"apiKeyEnv names ${options.api_key_env}, which is not set in wisp's environment"
            )
        headers["Authorization"] = f"Bearer {key}"
    client = StreamingClient(endpoint, options.timeout_s, headers)
    model = options.model or _served_model(options.api, client)
    if options.api == "ollama" and not model:
        raise ModelLoadError("the ollama backend needs `remoteModel`, e.g. qwen2.5-coder:1.5b")
    if options.fim_template:
        template = TEMPLATES[options.fim_template]
    else:
        template = template_for_model_name(model)
    if options.api == "llamacpp" and not template.uses_suffix:
        template = SERVER_FIM
    return RemoteBackend(options.api, client, template, model, options.extra_body)


def _served_model(api: Api, client: StreamingClient) -> str | None:
    """The first model an OpenAI-style server lists, or None (not asked, or no answer)."""
    if api != "openai":
        return None
    try:
        ids = model_ids(client.get_json("/models", min(client.timeout_s, PROBE_TIMEOUT_S)))
    except RemoteError as exc:
        log.warning("could not ask %s which model it serves: %s", client.endpoint, exc)
        return None
    return ids[0] if ids else None
