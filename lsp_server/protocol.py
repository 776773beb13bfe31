"""JSON-RPC hygiene: every request gets an answer, however broken the message that carried it.

pygls drops a request whose params do not match the method's type, a message that is not
JSON-RPC 2.0 and any request after `shutdown` without a word, and a client waiting on such a
request waits forever. Here each message is checked once, at the top level, before pygls sees
it; what cannot be served is answered with the JSON-RPC or LSP error that says why.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote

import cattrs
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcMethodNotFound,
    JsonRpcParseError,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
)

from lsp_server.documents import LspWorkspace
from model_runtime.backend import first_line

log = logging.getLogger(__name__)

# Messages of these methods are acted on before `initialize` (LSP: everything else is refused).
BEFORE_INITIALIZE = frozenset({types.INITIALIZE, types.EXIT})
# pygls raises deep inside for these when the document was never opened.
DOCUMENT_MUST_BE_OPEN = frozenset({types.TEXT_DOCUMENT_DID_CHANGE, types.TEXT_DOCUMENT_DID_CLOSE})
REASON_CHARS = 300  # the longest validation message sent back


class WispProtocol(LanguageServerProtocol):
    """pygls' LSP protocol with a checked front door (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_seen = False

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Leave every decoded object as it is: `handle_message` structures the whole message.

        pygls passes this as `json.loads`' object hook, which sees every nested object first;
        an object inside `params` that happens to look like a message must stay data.
        """
        return data

    def handle_message(self, message: Any) -> None:
        if (checked := self._check(message)) is not None:
            super().handle_message(checked)

    def _check(self, raw: Any) -> Any:
        """The structured message, or None once it has been answered or dropped."""
        if not isinstance(raw, dict):
            self._refuse(None, JsonRpcInvalidRequest("a message must be a JSON object"))
            return None
        method = raw.get("method")
        request_id = raw.get("id")
        is_request = "id" in raw and "method" in raw
        if is_request and not _valid_id(request_id):
            self._refuse(None, JsonRpcInvalidRequest("a request id must be an integer or string"))
            return None
        if raw.get("jsonrpc") != self.VERSION or ("method" in raw and not isinstance(method, str)):
            return self._drop_or_refuse(raw, JsonRpcInvalidRequest("not a JSON-RPC 2.0 message"))
        if "method" not in raw:
            return self._structure(raw)  # the client's answer to one of our requests
        if is_request and _is_notification(method):
            return self._refuse(
                request_id, JsonRpcInvalidRequest(f"{method} is a notification; send it without id")
            )
        params = raw.get("params")
        if method == types.CANCEL_REQUEST and not (
            isinstance(params, dict) and _valid_id(params.get("id"))
        ):
            return self._drop_or_refuse(raw, JsonRpcInvalidParams("$/cancelRequest needs an id"))
        if not self._initialize_seen and method not in BEFORE_INITIALIZE:
            return self._drop_or_refuse(
                raw, JsonRpcServerNotInitialized(f"{method} before initialize")
            )
        if self._shutdown and method != types.EXIT:
            return self._drop_or_refuse(raw, JsonRpcInvalidRequest("the server is shutting down"))
        if method == types.INITIALIZE and is_request and self._initialize_seen:
            return self._refuse(request_id, JsonRpcInvalidRequest("already initialized"))
        structured = self._structure(raw)
        if structured is not None and method == types.INITIALIZE:
            self._initialize_seen = True
        if method == types.WORKSPACE_EXECUTE_COMMAND and structured is not None:
            command = structured.params.command
            if command not in self.fm.commands:  # pygls would log a traceback for it
                return self._refuse(request_id, JsonRpcInvalidParams(f"no command {command!r}"))
        if method in DOCUMENT_MUST_BE_OPEN and structured is not None:
            uri = structured.params.text_document.uri
            if unquote(uri) not in self.workspace.text_documents:  # pygls keys them unquoted
                log.warning("dropped %s: %s is not open", method, uri)
                return None
        return structured

    def _structure(self, raw: dict[str, Any]) -> Any:
        """The message as the attrs class of its method (pygls' choice of class, done quietly)."""
        method = raw.get("method")
        message_type: Any
        if "id" in raw and "error" in raw:
            message_type = types.ResponseErrorMessage
        elif method is not None:
            fallback = JsonRPCRequestMessage if "id" in raw else JsonRPCNotification
            message_type = self.get_message_type(method) or fallback
        else:
            answered = self._result_types.pop(raw["id"], None) if _valid_id(raw.get("id")) else None
            message_type = answered or JsonRPCResponseMessage
        try:
            return self._converter.structure(raw, message_type)
        except Exception as exc:  # cattrs says what and where; anything else is just as bad
            reason = _validation_reason(exc)
        if method is None:
            log.warning("dropped a malformed response from the client: %s", reason)
            return None
        if not self._serves(method):
            return self._drop_or_refuse(raw, JsonRpcMethodNotFound(f"{method} is not served"))
        return self._drop_or_refuse(raw, JsonRpcInvalidParams(f"bad params for {method}: {reason}"))

    def _serves(self, method: str) -> bool:
        return method in self.fm.features or method in self.fm.builtin_features

    def _drop_or_refuse(self, raw: dict[str, Any], error: JsonRpcException) -> None:
        """Answer a request with `error`; a notification has nobody to answer, so log it."""
        if "id" in raw and "method" in raw:
            self._refuse(raw["id"], error)
        else:
            log.warning("dropped notification %s: %s", raw.get("method"), error.message)

    def _refuse(self, request_id: int | str | None, error: JsonRpcException) -> None:
        log.warning("refused request %r: %s", request_id, error.message)
        self._send_response(request_id, error=error.to_response_error())  # type: ignore[arg-type]

    def keep_lsp_lines(self) -> None:
        """Swap the workspace pygls made at `initialize` for one that splits lines as LSP does."""
        self._workspace = LspWorkspace.like(self.workspace)

    def answer_parse_error(self, reason: str) -> None:
        """A body that is not JSON: its id is unknown, so the answer has a null id."""
        self._refuse(None, JsonRpcParseError(reason[:REASON_CHARS]))


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_notification(method: Any) -> bool:
    entry = types.METHOD_TO_TYPES.get(method)
    return method == types.CANCEL_REQUEST or (entry is not None and entry[1] is None)


def _validation_reason(exc: Exception) -> str:
    """cattrs' complaints, one per bad field, as `what @ $.params.where`."""
    if isinstance(exc, cattrs.BaseValidationError):
        reason = "; ".join(cattrs.transform_error(exc))
    else:
        reason = first_line(exc)
    return reason[:REASON_CHARS]


class _KnownNoise(logging.Filter):
    """pygls logs a traceback for each body that is not JSON; wisp answers and logs it itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, json.JSONDecodeError | UnicodeDecodeError)


logging.getLogger("pygls.server").addFilter(_KnownNoise())
