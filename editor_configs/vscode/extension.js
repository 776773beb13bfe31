// @ts-check
/**
 * wisp for VS Code: starts `wisp serve`, turns its suggestions into inline completions (ghost
 * text), passes the `wisp.*` settings on, and shows the server's state in the status bar.
 */
"use strict";

const vscode = require("vscode");
const { LanguageClient, State } = require("vscode-languageclient/node");
const manifest = require("./package.json");

/** Settings the extension itself uses; the server would reject them as unknown. */
const CLIENT_ONLY = new Set(["serverCommand", "trace"]);
/** The server's settings: every contributed `wisp.*` key but the client's own. */
const SERVER_KEYS = Object.keys(manifest.contributes.configuration.properties)
  .map((key) => key.slice("wisp.".length).split(".")[0])
  .filter((key, index, keys) => !CLIENT_ONLY.has(key) && keys.indexOf(key) === index);

/** @typedef {{ state: "loading" | "ready" | "error", message: string }} Status */

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.StatusBarItem} */
let statusItem;
/** @type {vscode.LogOutputChannel} */
let output;

/** The `wisp` section as the server wants it (camelCase keys, no client-only ones). */
function serverSettings() {
  const config = vscode.workspace.getConfiguration("wisp");
  /** @type {Record<string, unknown>} */
  const settings = {};
  for (const key of SERVER_KEYS) {
    settings[key] = config.get(key);
  }
  return settings;
}

/** @param {string} icon @param {string} tooltip */
function showStatus(icon, tooltip) {
  statusItem.text = `$(${icon}) wisp`;
  statusItem.tooltip = `${tooltip}\nClick for completion stats.`;
}

/** @param {Status} status */
function onStatus(status) {
  const icons = { loading: "loading~spin", ready: "sparkle", error: "error" };
  showStatus(icons[status.state] ?? "question", `wisp: ${status.message}`);
}

/**
 * VS Code's stable API does not say when ghost text is displayed: count the first item of an
 * answer that arrives for a request still wanted, which is the item VS Code shows.
 * @param {vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined} answer
 * @param {vscode.CancellationToken} token
 */
function reportShown(answer, token) {
  const items = Array.isArray(answer) ? answer : answer?.items;
  const first = items?.[0];
  if (!client || token.isCancellationRequested || !first?.command) {
    return;
  }
  const { title, command, arguments: args } = first.command;
  const insertText = typeof first.insertText === "string" ? first.insertText : first.insertText.value;
  client
    .sendNotification("textDocument/didShowCompletion", {
      item: { insertText, command: { title, command, arguments: args } },
    })
    .catch((/** @type {unknown} */ error) => output.error(`didShowCompletion failed: ${error}`));
}

/** @returns {string[]} the program and its arguments */
function serverCommand() {
  return vscode.workspace.getConfiguration("wisp").get("serverCommand", ["wisp", "serve"]);
}

function createClient() {
  const [command, ...args] = serverCommand();
  /** @type {import("vscode-languageclient/node").ServerOptions} */
  const serverOptions = { command, args };
  /** @type {import("vscode-languageclient/node").LanguageClientOptions} */
  const clientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: serverSettings(),
    outputChannel: output,
    middleware: {
      // The server asks for the `wisp` section on start; answer without client-only keys.
      workspace: {
        configuration: (params) =>
          params.items.map((item) => (item.section === "wisp" ? serverSettings() : null)),
      },
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const answer = await next(document, position, context, token);
        reportShown(answer, token);
        return answer;
      },
    },
  };
  const created = new LanguageClient("wisp", "wisp", serverOptions, clientOptions);
  // vscode-languageclient 9 ships inline completion as a proposed feature; from 10 on it is a
  // standard one and this adds nothing. Either way the client advertises
  // textDocument.inlineCompletion, so wisp answers with ghost text rather than menu items.
  created.registerProposedFeatures();
  created.onNotification("wisp/status", onStatus);
  created.onDidChangeState(({ newState }) => {
    if (newState === State.Stopped) showStatus("circle-slash", "wisp: the server is not running");
    if (newState === State.Starting) showStatus("loading~spin", "wisp: starting the server");
  });
  return created;
}

async function startClient() {
  client = createClient();
  try {
    await client.start();
  } catch (error) {
    showStatus("error", `wisp: could not start the server: ${error}`);
    output.error(`could not start ${JSON.stringify(serverCommand())}: ${error}`);
  }
}

async function restart() {
  const previous = client;
  client = undefined;
  if (previous?.needsStop()) {
    await previous.stop();
  }
  await startClient();
}

async function showStats() {
  if (!client?.isRunning()) {
    vscode.window.showWarningMessage("wisp: the server is not running.");
    return;
  }
  const stats = await client.sendRequest("wisp/stats", {});
  const document = await vscode.workspace.openTextDocument({
    language: "json",
    content: `${JSON.stringify(stats, null, 2)}\n`,
  });
  await vscode.window.showTextDocument(document, { preview: true });
}

/** @param {vscode.ConfigurationChangeEvent} event */
function onConfigurationChange(event) {
  if (event.affectsConfiguration("wisp.serverCommand")) {
    void restart();
  } else if (event.affectsConfiguration("wisp") && client?.isRunning()) {
    void client.sendNotification("workspace/didChangeConfiguration", {
      settings: { wisp: serverSettings() },
    });
  }
}

/** @param {vscode.ExtensionContext} context */
async function activate(context) {
  output = vscode.window.createOutputChannel("wisp", { log: true });
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "wisp.showStats";
  showStatus("loading~spin", "wisp: starting the server");
  statusItem.show();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand("wisp.restart", restart),
    vscode.commands.registerCommand("wisp.showStats", showStats),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChange),
  );
  await startClient();
}

async function deactivate() {
  if (client?.needsStop()) {
    await client.stop();
  }
}

module.exports = { activate, deactivate };
