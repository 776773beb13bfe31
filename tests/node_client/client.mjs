// @ts-check
// Drive `wisp serve` with vscode-jsonrpc / vscode-languageserver-protocol, the libraries the
// VS Code language client is built on: initialize -> didOpen -> inlineCompletion -> didChange
// -> cancel -> executeCommand accept -> wisp/stats -> shutdown -> exit.
//
// Every response is checked against the protocol's types twice: `tsc` checks this file against
// the packages' TypeScript declarations (`npm run typecheck`), and the runtime checks below use
// the packages' own guards (Range.is, Command.is, ...) and reject keys the types do not have.
//
// Environment: WISP_PYTHON (interpreter with wisp installed), WISP_MODEL (model folder).
// Prints a JSON report on stdout; exits 1 when a check failed.

import { spawn } from "node:child_process";
import protocol from "vscode-languageserver-protocol/node";

const {
  CancellationTokenSource,
  Command,
  ConfigurationRequest,
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  InitializeRequest,
  InitializedNotification,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LSPErrorCodes,
  LogMessageNotification,
  NotificationType,
  PositionEncodingKind,
  Range,
  RequestType,
  ResponseError,
  ShowMessageNotification,
  ShutdownRequest,
  StringValue,
  TextDocumentSyncKind,
  WorkDoneProgressCreateRequest,
  createProtocolConnection,
} = protocol;

/** @typedef {import("vscode-languageserver-protocol").InlineCompletionItem} InlineCompletionItem */
/** @typedef {import("vscode-languageserver-protocol").InlineCompletionList} InlineCompletionList */
/** @typedef {import("vscode-languageserver-protocol").InitializeResult} InitializeResult */
/** @typedef {{ state: "loading" | "ready" | "error", message: string }} Status */
/** @typedef {Record<string, unknown> & { per_language: Record<string, Record<string, unknown>> }} Stats */

const StatusNotification = /** @type {import("vscode-jsonrpc").NotificationType<Status>} */ (
  new NotificationType("wisp/status")
);
const StatsRequest = /** @type {import("vscode-jsonrpc").RequestType<object, Stats, void>} */ (
  new RequestType("wisp/stats")
);
/** @type {import("vscode-jsonrpc").NotificationType<{ item: InlineCompletionItem }>} */
const DidShowCompletion = new NotificationType("textDocument/didShowCompletion");

const URI = "file:///work/demo.py";
const TIMEOUT_MS = 120_000;

/** @type {{ step: string, ok: boolean, detail?: unknown }[]} */
const steps = [];
/** @type {string[]} */
const failures = [];

/** Record one check; a failed one makes the run fail. */
function check(/** @type {string} */ step, /** @type {boolean} */ ok, /** @type {unknown} */ detail) {
  steps.push({ step, ok, detail });
  if (!ok) failures.push(step);
}

/** Keys of `value` that its protocol type does not have. */
function extraKeys(/** @type {object} */ value, /** @type {string[]} */ allowed) {
  return Object.keys(value).filter((key) => !allowed.includes(key));
}

/** @param {unknown} value @returns {value is InlineCompletionItem} */
function isInlineCompletionItem(value) {
  if (typeof value !== "object" || value === null) return false;
  const item = /** @type {Record<string, unknown>} */ (value);
  return (
    extraKeys(item, ["insertText", "filterText", "range", "command"]).length === 0 &&
    (typeof item.insertText === "string" || StringValue.isSnippet(item.insertText)) &&
    (item.filterText === undefined || typeof item.filterText === "string") &&
    (item.range === undefined ||
      (Range.is(item.range) && item.range.start.line === item.range.end.line)) &&
    (item.command === undefined || Command.is(item.command))
  );
}

/** @param {unknown} value @returns {value is InlineCompletionList} */
function isInlineCompletionList(value) {
  if (typeof value !== "object" || value === null) return false;
  const list = /** @type {Record<string, unknown>} */ (value);
  return (
    extraKeys(list, ["items"]).length === 0 &&
    Array.isArray(list.items) &&
    list.items.every(isInlineCompletionItem)
  );
}

/** @param {InitializeResult} result */
function checkCapabilities(result) {
  const caps = result.capabilities;
  const sync = caps.textDocumentSync;
  const change = typeof sync === "number" ? sync : sync?.change;
  const commands = caps.executeCommandProvider?.commands ?? [];
  check("initialize: serverInfo", result.serverInfo?.name === "wisp", result.serverInfo);
  check(
    "initialize: positionEncoding",
    Object.values(PositionEncodingKind).includes(/** @type {string} */ (caps.positionEncoding)),
    caps.positionEncoding,
  );
  check("initialize: incremental sync", change === TextDocumentSyncKind.Incremental, sync);
  check(
    "initialize: inlineCompletionProvider",
    caps.inlineCompletionProvider === true || typeof caps.inlineCompletionProvider === "object",
    caps.inlineCompletionProvider,
  );
  check(
    "initialize: executeCommandProvider",
    commands.every((c) => typeof c === "string") &&
      commands.includes("wisp.didAccept") &&
      commands.includes("wisp.stats"),
    commands,
  );
}

/** The accept command's item id, checked against the shape the README documents. */
function acceptedId(/** @type {InlineCompletionItem} */ item) {
  const args = item.command?.arguments;
  const ok = item.command?.command === "wisp.didAccept" && typeof args?.[0] === "string";
  return ok && args ? /** @type {string} */ (args[0]) : undefined;
}

/** @param {unknown} value @returns {value is Stats} */
function isStats(value) {
  if (typeof value !== "object" || value === null) return false;
  const stats = /** @type {Record<string, unknown>} */ (value);
  const counts = ["requests", "shown", "accepted", "partially_accepted"];
  const latency = /** @type {Record<string, unknown> | undefined} */ (stats.latency_ms);
  return (
    counts.every((key) => Number.isInteger(stats[key])) &&
    typeof stats.engine_ms_total === "number" &&
    (stats.acceptance_rate === null || typeof stats.acceptance_rate === "number") &&
    (stats.cache_hit_rate === null || typeof stats.cache_hit_rate === "number") &&
    typeof latency === "object" &&
    latency !== null &&
    "p50" in latency &&
    "p95" in latency &&
    typeof stats.per_language === "object"
  );
}

async function main() {
  const python = process.env.WISP_PYTHON ?? "python3";
  const model = process.env.WISP_MODEL;
  if (!model) throw new Error("WISP_MODEL is not set");
  const server = spawn(python, ["-m", "lsp_server.cli", "serve"], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
  });
  /** @type {Promise<number | null>} */
  const exited = new Promise((resolve) => server.on("exit", (code) => resolve(code)));
  const connection = createProtocolConnection(server.stdout, server.stdin);

  /** @type {Record<string, unknown>} */
  let settings = { model, maxNewTokens: 3 };
  /** @type {Status[]} */
  const statuses = [];
  /** @type {(status: Status) => void} */
  let onStatus = () => {};
  /** @type {import("vscode-languageserver-protocol").ShowMessageParams[]} */
  const messages = [];
  connection.onNotification(StatusNotification, (status) => {
    statuses.push(status);
    onStatus(status);
  });
  connection.onNotification(ShowMessageNotification.type, (params) => {
    messages.push(params);
  });
  connection.onNotification(LogMessageNotification.type, () => {});
  connection.onNotification("$/progress", () => {});
  connection.onRequest(WorkDoneProgressCreateRequest.type, () => {});
  connection.onRequest(ConfigurationRequest.type, (params) =>
    params.items.map((item) => (item.section === "wisp" ? settings : null)),
  );
  connection.listen();

  /** @type {Promise<Status>} */
  const ready = new Promise((resolve) => {
    onStatus = (status) => status.state !== "loading" && resolve(status);
  });
  const init = await connection.sendRequest(InitializeRequest.type, {
    processId: process.pid,
    rootUri: "file:///work",
    initializationOptions: settings,
    capabilities: {
      general: { positionEncodings: [PositionEncodingKind.UTF16] },
      textDocument: {
        synchronization: { dynamicRegistration: false },
        inlineCompletion: { dynamicRegistration: false },
      },
      workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: false } },
      window: { workDoneProgress: true },
    },
  });
  checkCapabilities(init);
  await connection.sendNotification(InitializedNotification.type, {});
  const status = await ready;
  check("wisp/status ready", status.state === "ready", statuses);

  await connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri: URI, languageId: "python", version: 1, text: "total = \n" },
  });
  /** @param {number} line @param {number} character @param {import("vscode-languageserver-protocol").CancellationToken} [token] */
  const inline = (line, character, token) =>
    connection.sendRequest(
      InlineCompletionRequest.type,
      {
        textDocument: { uri: URI },
        position: { line, character },
        context: { triggerKind: InlineCompletionTriggerKind.Automatic },
      },
      token,
    );

  const first = await inline(0, 8);
  check("inlineCompletion: a valid InlineCompletionList", isInlineCompletionList(first), first);
  const firstItems = Array.isArray(first) ? first : (first?.items ?? []);
  check("inlineCompletion: suggests xxx", firstItems[0]?.insertText === "xxx", firstItems);

  await connection.sendNotification(DidChangeTextDocumentNotification.type, {
    textDocument: { uri: URI, version: 2 },
    contentChanges: [
      { range: { start: { line: 0, character: 8 }, end: { line: 0, character: 8 } }, text: "1 + " },
    ],
  });
  const second = await inline(0, 12);
  const secondItems = Array.isArray(second) ? second : (second?.items ?? []);
  check("inlineCompletion after didChange", isInlineCompletionList(second), second);
  check("inlineCompletion after didChange: xxx", secondItems[0]?.insertText === "xxx", second);

  // A long generation, cancelled with $/cancelRequest through a CancellationToken.
  settings = { ...settings, maxNewTokens: 512, multiline: "always" };
  await connection.sendNotification(DidChangeConfigurationNotification.type, {
    settings: { wisp: settings },
  });
  const source = new CancellationTokenSource();
  const slow = inline(0, 12, source.token);
  let cancelledAt = 0;
  // 512 tokens take the tiny model 0.1-0.2 s: cancel while it runs (or still waits its turn)
  setTimeout(() => {
    cancelledAt = Date.now();
    source.cancel();
  }, 20);
  const outcome = await slow.then(
    (result) => ({ result }),
    (/** @type {unknown} */ error) => ({ error }),
  );
  const error = "error" in outcome ? outcome.error : undefined;
  check(
    "cancel: the server answers RequestCancelled",
    error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled,
    {
      answer: "error" in outcome ? String(outcome.error) : outcome.result,
      ms_after_cancel: Date.now() - cancelledAt,
    },
  );
  settings = { ...settings, maxNewTokens: 3, multiline: "auto" };
  await connection.sendNotification(DidChangeConfigurationNotification.type, {
    settings: { wisp: settings },
  });

  const third = await inline(0, 12);
  const thirdItems = Array.isArray(third) ? third : (third?.items ?? []);
  check("inlineCompletion after cancel", isInlineCompletionList(third) && thirdItems.length === 1, third);
  const itemId = thirdItems[0] ? acceptedId(thirdItems[0]) : undefined;
  check("item carries wisp.didAccept with an id", itemId !== undefined, thirdItems[0]?.command);

  await connection.sendNotification(DidShowCompletion, { item: thirdItems[0] });
  const accepted = await connection.sendRequest(ExecuteCommandRequest.type, {
    command: "wisp.didAccept",
    arguments: [itemId],
  });
  check("executeCommand wisp.didAccept answers null", accepted === null, accepted);

  const stats = await connection.sendRequest(StatsRequest, {});
  check("wisp/stats: shape", isStats(stats), stats);
  check(
    "wisp/stats: counts",
    stats.requests === 3 && stats.shown === 1 && stats.accepted === 1,
    { requests: stats.requests, shown: stats.shown, accepted: stats.accepted },
  );
  check("wisp/stats: per language", Object.keys(stats.per_language).join() === "python", stats.per_language);
  const viaCommand = await connection.sendRequest(ExecuteCommandRequest.type, {
    command: "wisp.stats",
  });
  check("executeCommand wisp.stats", isStats(viaCommand), viaCommand);

  const errors = messages.filter((m) => m.type === 1);
  check("no error messages", errors.length === 0, errors);
  const shutdown = await connection.sendRequest(ShutdownRequest.type);
  check("shutdown answers null", shutdown === null, shutdown);
  await connection.sendNotification(ExitNotification.type);
  const code = await exited;
  check("server exits with 0", code === 0, code);
  connection.dispose();
}

const timer = setTimeout(() => {
  failures.push(`no result within ${TIMEOUT_MS} ms`);
  finish();
}, TIMEOUT_MS);

function finish() {
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({ steps, failures }, null, 1)}\n`);
  process.exit(failures.length ? 1 : 0);
}

main().then(finish, (/** @type {unknown} */ error) => {
  failures.push(`crashed: ${error instanceof Error ? error.stack : String(error)}`);
  finish();
});
