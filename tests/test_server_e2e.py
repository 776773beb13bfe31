"""End to end over real stdio: `wisp serve` in a subprocess, pytest-lsp's client in the test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsp_session import start, stop
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

pytestmark = pytest.mark.slow
URI = "file:///work/demo.py"


async def test_capabilities_and_shutdown(x_model: Path) -> None:
    session, result = await start({"model": str(x_model)})
    caps = result.capabilities
    assert result.server_info is not None and result.server_info.name == "wisp"
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    sync = caps.text_document_sync
    assert isinstance(sync, types.TextDocumentSyncOptions)
    assert sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    await session.wait_state("ready")
    assert await stop(session) == 0


async def test_utf8_encoding_is_negotiated(x_model: Path) -> None:
    session, result = await start({"model": str(x_model)}, encodings=["utf-8", "utf-16"])
    assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
    await session.wait_state("ready")
    session.open(URI, 's = "😀" + \n')
    # "😀" is 4 UTF-8 units: the cursor after `+ ` is at byte column 12
    items = (await session.inline(URI, 0, 12)).items
    assert items and items[0].insert_text.startswith("x")
    await stop(session)


async def test_inline_and_classic_completion_after_edits(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 5})
    status = await session.wait_state("ready", "error")
    assert status["state"] == "ready", status
    session.open(URI, "def f():\n    return \n")
    session.insert(URI, 1, 11, "1 + ", version=2)
    inline = await session.inline(URI, 1, 15)
    assert [item.insert_text for item in inline.items] == ["xxxxx"]
    assert inline.items[0].range is None

    menu = await session.client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI),
            position=types.Position(line=1, character=15),
        )
    )
    assert isinstance(menu, types.CompletionList) and menu.is_incomplete
    item = menu.items[0]
    assert item.label == "xxxxx"
    assert isinstance(item.text_edit, types.TextEdit) and item.text_edit.new_text == "xxxxx"
    assert item.text_edit.range.start == types.Position(line=1, character=15)
    assert isinstance(item.documentation, types.MarkupContent)
    assert "xxxxx" in item.documentation.value

    session.client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=URI))
    )
    assert not (await session.inline(URI, 1, 15)).items
    await stop(session)


async def test_suggestion_that_only_retypes_the_closing_bracket_is_not_offered(
    paren_model: Path,
) -> None:
    session, _ = await start({"model": str(paren_model), "maxNewTokens": 1})
    await session.wait_state("ready")
    session.open(URI, "print(\n")
    session.client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text="print()\n")],
        )
    )
    assert not (await session.inline(URI, 0, 6)).items  # `)` over `)` changes nothing
    await stop(session)


async def test_suggestion_that_retypes_the_rest_of_the_line_replaces_it(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 5})
    await session.wait_state("ready")
    session.open(URI, "a = xx\n")
    items = (await session.inline(URI, 0, 4)).items
    assert items[0].insert_text == "xxxxx"
    assert items[0].range == types.Range(
        start=types.Position(line=0, character=4), end=types.Position(line=0, character=6)
    )
    await stop(session)


async def test_positions_past_the_end_and_unknown_documents(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 3})
    await session.wait_state("ready")
    session.open(URI, "a = 1\nb = \n")
    past_line_end = await session.inline(URI, 1, 99)
    assert [i.insert_text for i in past_line_end.items] == ["xxx"]
    past_doc_end = await session.inline(URI, 50, 0)
    assert isinstance(past_doc_end, types.InlineCompletionList)
    never_opened = await session.inline("file:///nowhere/never.py", 0, 0)
    assert not never_opened.items
    await stop(session)


async def test_cancel_request_stops_generation(x_model: Path) -> None:
    # the gate off: 512 x's are not what it would show, and the gate is not what this tests
    settings = {"model": str(x_model), "maxNewTokens": 512, "multiline": "always"}
    session, _ = await start({**settings, "minConfidence": 0})
    await session.wait_state("ready")
    session.open(URI, "x = \n")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        position=types.Position(line=0, character=4),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked
        ),
    )
    future = session.client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="slow-one"
    )
    await asyncio.sleep(0.02)  # 512 tokens take the tiny model 0.1-0.2 s
    session.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="slow-one"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wrap_future(future)
    # The worker is free again at once: a fresh request is answered quickly.
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"wisp": {"maxNewTokens": 2}})
    )
    assert [i.insert_text for i in (await session.inline(URI, 0, 4)).items] == ["xx"]
    await stop(session)


async def test_newer_request_supersedes_older(x_model: Path) -> None:
    # the gate off: 512 x's are not what it would show, and the gate is not what this tests
    settings = {"model": str(x_model), "maxNewTokens": 512, "multiline": "always"}
    session, _ = await start({**settings, "minConfidence": 0})
    await session.wait_state("ready")
    session.open(URI, "x = \n")
    # 512 tokens of the tiny model take 0.1-0.2 s: the second request comes while the first runs
    # (or waits its turn; it is superseded either way).
    first = asyncio.ensure_future(session.inline(URI, 0, 4))
    await asyncio.sleep(0.02)
    second = await session.inline(URI, 0, 4)
    assert not (await first).items
    assert second.items and len(second.items[0].insert_text) > 0
    await stop(session)


async def test_malformed_initialization_options_fall_back(x_model: Path) -> None:
    session, _ = await start(  # the gate off: the tiny model's x's are not what it would show
        {
            "model": str(x_model),
            "maxNewTokens": "lots",
            "multiline": 3,
            "bogus": True,
            "minConfidence": 0,
        }
    )
    await session.wait_state("ready")
    shown = [m.message for m in session.client.messages]
    assert any("maxNewTokens" in m for m in shown), shown
    assert any("multiline" in m for m in shown), shown
    assert any("bogus" in m for m in shown), shown
    session.open(URI, "y = \n")
    assert (await session.inline(URI, 0, 4)).items  # still serving, with defaults
    await stop(session)


async def test_initialization_options_of_the_wrong_type(x_model: Path) -> None:
    session, _ = await start(["not", "an", "object"])
    status = await session.wait_state("ready", "error")
    assert any("settings must be an object" in m.message for m in session.client.messages)
    assert status["state"] in {"ready", "error"}
    await stop(session)


async def test_missing_model_reports_error_and_answers_empty(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    session, _ = await start({"model": str(missing)})
    status = await session.wait_state("error")
    assert "does not exist" in status["message"]
    errors = [m for m in session.client.messages if m.type == types.MessageType.Error]
    assert errors and str(missing) in errors[0].message
    session.open(URI, "z = \n")
    assert not (await session.inline(URI, 0, 4)).items
    await stop(session)


async def test_not_a_causal_lm_reports_error(tmp_path: Path) -> None:
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip_vision_model"}')
    session, _ = await start({"model": str(folder)})
    status = await session.wait_state("error")
    assert str(folder) in status["message"]
    await stop(session)


async def test_progress_is_reported_while_loading(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model)})
    await session.wait_state("ready")
    assert [s["state"] for s in session.statuses][:2] == ["loading", "ready"]
    reports = list(session.client.progress_reports.values())
    assert reports and isinstance(reports[0][0], types.WorkDoneProgressBegin)
    assert isinstance(reports[0][-1], types.WorkDoneProgressEnd)
    await stop(session)


async def test_changing_the_model_reloads(x_model: Path, paren_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 1})
    await session.wait_state("ready")
    session.statuses.clear()
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"wisp": {"model": str(paren_model)}})
    )
    await session.wait_state("ready")
    session.open(URI, "q(\n")
    assert [i.insert_text for i in (await session.inline(URI, 0, 2)).items] == [")"]
    await stop(session)


async def test_requests_while_loading_answer_empty(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 2})
    await session.wait_state("loading")
    session.open(URI, "w = \n")
    answer = await session.inline(URI, 0, 4)
    ready_before_answer = any(s["state"] == "ready" for s in session.statuses)
    # Loading imports torch in a worker thread (seconds); the answer comes before that ends.
    assert ready_before_answer or not answer.items
    await session.wait_state("ready")
    assert [i.insert_text for i in (await session.inline(URI, 0, 4)).items] == ["xx"]
    await stop(session)


async def test_inline_capable_clients_get_no_duplicate_menu_items(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 2}, inline_capable=True)
    await session.wait_state("ready")
    session.open(URI, "v = \n")
    assert [i.insert_text for i in (await session.inline(URI, 0, 4)).items] == ["xx"]
    menu = await session.client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI),
            position=types.Position(line=0, character=4),
        )
    )
    assert isinstance(menu, types.CompletionList) and not menu.items
    await stop(session)


async def test_typing_out_a_suggestion_answers_its_rest(x_model: Path) -> None:
    session, _ = await start({"model": str(x_model), "maxNewTokens": 5})
    await session.wait_state("ready")
    session.open(URI, "y = \n")
    assert [i.insert_text for i in (await session.inline(URI, 0, 4)).items] == ["xxxxx"]
    session.insert(URI, 0, 4, "xx", version=2)
    # the model would say "xxxxx" again; the rest of the shown suggestion is what the user wants
    assert [i.insert_text for i in (await session.inline(URI, 0, 6)).items] == ["xxx"]
    await stop(session)


async def test_a_burst_of_keystrokes_leaves_no_backlog(x_model: Path) -> None:
    settings = {"model": str(x_model), "maxNewTokens": 200, "debounceMs": 50, "minConfidence": 0}
    session, _ = await start(settings)  # the gate off: it would hide 200 x's
    await session.wait_state("ready")
    session.open(URI, "a = \n")
    pending = []
    for column in range(4, 12):  # typing "b" eight times, asking after each key
        session.insert(URI, 0, column, "b", version=column)
        pending.append(asyncio.ensure_future(session.inline(URI, 0, column + 1)))
        await asyncio.sleep(0.01)
    answers = await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
    assert all(not a.items for a in answers[:-1])  # replaced before the model ran them
    assert answers[-1].items and answers[-1].items[0].insert_text.startswith("x")
    await stop(session)
