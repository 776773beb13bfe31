"""End to end over stdio: item commands, acceptance events, `wisp/stats`, language and
comment/string gating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lsp_session import Session, start, stop
from lsprotocol import types
from lsprotocol.converters import get_converter

pytestmark = pytest.mark.slow
URI = "file:///work/demo.py"
INVOKED = types.InlineCompletionTriggerKind.Invoked
AUTOMATIC = types.InlineCompletionTriggerKind.Automatic


def plain(value: Any) -> Any:
    """A custom method's result (pygls gives named tuples) as plain dicts and lists."""
    if hasattr(value, "_asdict"):
        return {key: plain(item) for key, item in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


async def stats(session: Session) -> dict[str, Any]:
    result = await session.client.protocol.send_request_async("wisp/stats", None)
    snapshot = plain(result)
    assert isinstance(snapshot, dict)
    return snapshot


async def inline(
    session: Session, uri: str, line: int, character: int, kind: types.InlineCompletionTriggerKind
) -> list[types.InlineCompletionItem]:
    result = await session.client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=kind),
        )
    )
    assert isinstance(result, types.InlineCompletionList)
    return result.items


def notify_item(
    session: Session, method: str, item: types.InlineCompletionItem, **extra: Any
) -> None:
    """Send back the item as the client received it, as the Copilot-style notifications do."""
    session.client.protocol.notify(method, {"item": get_converter().unstructure(item), **extra})


async def test_commands_are_advertised(x_model: Path) -> None:
    session, result = await start({"model": str(x_model)})
    provider = result.capabilities.execute_command_provider
    assert provider is not None
    assert {"wisp.didAccept", "wisp.stats"} <= set(provider.commands)
    await stop(session)


async def test_acceptance_events_and_stats(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 3})
    await session.wait_state("ready")
    session.open(URI, "a = \nb = \nc = \n")
    answers = [await inline(session, URI, line, 4, AUTOMATIC) for line in range(3)]
    items = [found[0] for found in answers]
    commands = [item.command for item in items]
    assert all(c is not None and c.command == "wisp.didAccept" for c in commands), commands
    ids = [c.arguments[0] for c in commands if c is not None and c.arguments]
    assert len(set(ids)) == 3  # one id per item

    for item in items:
        notify_item(session, "textDocument/didShowCompletion", item)
    notify_item(session, "textDocument/didShowCompletion", items[0])  # shown twice: once
    notify_item(session, "textDocument/didPartiallyAcceptCompletion", items[1], acceptedLength=1)
    accept = types.ExecuteCommandParams(command="wisp.didAccept", arguments=[ids[0]])
    assert await session.client.workspace_execute_command_async(accept) is None
    assert await session.client.workspace_execute_command_async(accept) is None  # once
    unknown = types.ExecuteCommandParams(command="wisp.didAccept", arguments=["not-an-id"])
    await session.client.workspace_execute_command_async(unknown)  # ignored, no error

    snapshot = await stats(session)
    assert (snapshot["requests"], snapshot["items"], snapshot["shown"]) == (3, 3, 3)
    assert (snapshot["accepted"], snapshot["partially_accepted"]) == (1, 1)
    assert snapshot["acceptance_rate"] == round(1 / 3, 4)
    assert snapshot["engine_ms_total"] > 0
    model = snapshot["model"]  # three answers of the local model, 3 tokens each at most
    assert model["prefilled_tokens"] > 0 and 0 < model["forward_passes"] <= 9
    assert model["prefill_tokens_per_s"] > 0 and model["decode_tokens_per_s"] > 0
    p50, p95 = snapshot["latency_ms"]["p50"], snapshot["latency_ms"]["p95"]
    assert 0 < p50 <= p95
    assert snapshot["cache_hit_rate"] == 0.0
    assert set(snapshot["per_language"]) == {"python"}
    assert snapshot["per_language"]["python"]["accepted"] == 1

    as_command = await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="wisp.stats")
    )
    assert plain(as_command)["accepted"] == 1
    await stop(session)


async def test_a_repeated_request_counts_as_a_cache_hit(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 3})
    await session.wait_state("ready")
    session.open(URI, "a = \n")
    first = await inline(session, URI, 0, 4, AUTOMATIC)
    second = await inline(session, URI, 0, 4, AUTOMATIC)
    assert [i.insert_text for i in first] == [i.insert_text for i in second] == ["xxx"]
    snapshot = await stats(session)
    assert (snapshot["requests"], snapshot["cache_hit_rate"]) == (2, 0.5)
    await stop(session)


@pytest.mark.parametrize(
    ("policy", "automatic_in_comment", "invoked_in_comment"),
    [("never", False, False), ("invoked", False, True), ("always", True, True)],
)
async def test_comments_and_strings_policy(
    x_model: Path, policy: str, automatic_in_comment: bool, invoked_in_comment: bool
) -> None:
    settings = {"model": str(x_model), "maxNewTokens": 2, "commentsAndStrings": policy}
    session, _ = await start(settings)
    await session.wait_state("ready")
    session.open(URI, 'x = 1  # why \ns = "tex\ny = \n')
    in_comment = (0, len("x = 1  # why "))
    in_string = (1, len('s = "tex'))
    for line, character in (in_comment, in_string):
        automatic = await inline(session, URI, line, character, AUTOMATIC)
        invoked = await inline(session, URI, line, character, INVOKED)
        assert bool(automatic) is automatic_in_comment, (policy, line)
        assert bool(invoked) is invoked_in_comment, (policy, line)
    assert await inline(session, URI, 2, 4, AUTOMATIC)  # code completes under every policy
    await stop(session)


async def test_classic_completion_in_a_comment_follows_the_trigger_kind(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 2})
    await session.wait_state("ready")
    session.open(URI, "x = 1  # why \n")

    async def menu(context: types.CompletionContext | None) -> list[types.CompletionItem]:
        result = await session.client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=URI),
                position=types.Position(line=0, character=13),
                context=context,
            )
        )
        assert isinstance(result, types.CompletionList)
        return result.items

    typed = types.CompletionContext(
        trigger_kind=types.CompletionTriggerKind.TriggerCharacter, trigger_character="#"
    )
    assert not await menu(typed)
    asked = await menu(types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked))
    assert [item.label for item in asked] == ["xx"]
    assert asked[0].command is not None and asked[0].command.command == "wisp.didAccept"
    assert [item.label for item in await menu(None)] == ["xx"]  # no context: asked for
    snapshot = await stats(session)
    assert snapshot["shown"] == 2  # a menu's first item counts as shown when it is sent
    await stop(session)


async def test_enabled_and_disabled_languages(x_model: Path) -> None:
    settings = {"model": str(x_model), "maxNewTokens": 2, "enabledLanguages": ["python", "go"]}
    session, _ = await start(settings)
    await session.wait_state("ready")
    for uri, language in [(URI, "python"), ("file:///w/m.go", "go"), ("file:///w/r.rb", "ruby")]:
        session.open(uri, "v = \n", language=language)
    assert await inline(session, URI, 0, 4, AUTOMATIC)
    assert await inline(session, "file:///w/m.go", 0, 4, AUTOMATIC)
    assert not await inline(session, "file:///w/r.rb", 0, 4, AUTOMATIC)
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"wisp": {"disabledLanguages": ["go"]}})
    )
    assert not await inline(session, "file:///w/m.go", 0, 4, AUTOMATIC)
    assert await inline(session, URI, 0, 4, AUTOMATIC)
    assert set((await stats(session))["per_language"]) == {"python", "go"}
    await stop(session)
