// @ts-check
/**
 * wisp for VS Code: starts `wisp serve`, turns its suggestions into inline completions (ghost
 * text), passes the `wisp.*` settings on, shows the server's state and model in the status bar,
 * and lets the user choose the model from what the server finds on this machine.
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

/** @typedef {{ state: "loading" | "ready" | "error", message: string, model?: string }} Status */
/**
 * A model on this machine, as the server's `wisp.models` command lists it.
 * @typedef {{ name: string | null, source: string, path: string, architecture: string,
 *   types: string[], sizeBytes: number, fim: boolean, note: string }} LocalModel
 */
/**
 * A model the server can download (`wisp.pull`).
 * @typedef {{ name: string, repo: string, sizeBytes: number, note: string, pulled: boolean }}
 *   PullableModel
 */
/**
 * What `wisp.models` answers; `current` is the `model` setting.
 * @typedef {{ current: string | null, models: LocalModel[], pullable: PullableModel[] }} ModelList
 */
/**
 * A row of the Choose Model pick: a local model's setting, or a model to download first.
 * @typedef {vscode.QuickPickItem & { setting?: string | null, pull?: string }} ModelItem
 */

/** Longest model name the status bar shows; longer ones keep their start and end. */
const STATUS_NAME_LENGTH = 32;

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

/**
 * `model` short enough for the status bar: a path's last part, a long name's ends.
 * @param {string} model
 */
function statusName(model) {
  const path = /^[/~.]|^[A-Za-z]:[/\\]/.test(model);
  const name = (path && model.split(/[/\\]/).pop()) || model;
  if (name.length <= STATUS_NAME_LENGTH) {
    return name;
  }
  const tail = Math.floor(STATUS_NAME_LENGTH / 3);
  return `${name.slice(0, STATUS_NAME_LENGTH - tail - 1)}…${name.slice(-tail)}`;
}

/** @param {string} icon @param {string} tooltip @param {string} [model] */
function showStatus(icon, tooltip, model) {
  statusItem.text = model ? `$(${icon}) wisp: ${statusName(model)}` : `$(${icon}) wisp`;
  statusItem.tooltip = `${tooltip}\nClick for completion stats.`;
}

/** @param {Status} status */
function onStatus(status) {
  const icons = { loading: "loading~spin", ready: "sparkle", error: "error" };
  showStatus(icons[status.state] ?? "question", `wisp: ${status.message}`, status.model);
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

/** The client if the server runs; else says so and returns undefined. */
function runningClient() {
  if (client?.isRunning()) {
    return client;
  }
  vscode.window.showWarningMessage("wisp: the server is not running.");
  return undefined;
}

async function showStats() {
  const running = runningClient();
  if (!running) {
    return;
  }
  const stats = await running.sendRequest("wisp/stats", {});
  const document = await vscode.workspace.openTextDocument({
    language: "json",
    content: `${JSON.stringify(stats, null, 2)}\n`,
  });
  await vscode.window.showTextDocument(document, { preview: true });
}

/**
 * Run one of the server's `workspace/executeCommand` commands.
 * @param {LanguageClient} running @param {string} command @param {...unknown} args
 * @returns {Promise<any>}
 */
function executeServerCommand(running, command, ...args) {
  return running.sendRequest("workspace/executeCommand", { command, arguments: args });
}

/** @param {number} bytes */
function formatSize(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${Math.round(bytes / 1e6)} MB`;
  return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

/** @param {unknown} error */
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The pick's rows: this machine's models (the current one checked), then the downloadable
 * ones not downloaded yet.
 * @param {ModelList} list
 * @returns {ModelItem[]}
 */
function modelItems(list) {
  /** @type {ModelItem[]} */
  const items = [{ label: "On this machine", kind: vscode.QuickPickItemKind.Separator }];
  for (const model of list.models) {
    const current = model.name === (list.current || null);
    const facts = [model.source, formatSize(model.sizeBytes), model.architecture];
    facts.push(model.types.join(", "), model.fim ? "" : "no FIM");
    items.push({
      label: `${current ? "$(check) " : ""}${model.name ?? "bundled model"}`,
      description: facts.filter(Boolean).join(" · "),
      detail: [model.note, model.path].filter(Boolean).join(" — "),
      setting: model.name,
    });
  }
  const downloads = list.pullable.filter((model) => !model.pulled);
  if (downloads.length) {
    items.push({ label: "Download", kind: vscode.QuickPickItemKind.Separator });
  }
  for (const model of downloads) {
    items.push({
      label: `$(cloud-download) ${model.name}`,
      description: `about ${formatSize(model.sizeBytes)} · ${model.repo}`,
      detail: model.note,
      pull: model.name,
    });
  }
  return items;
}

/**
 * Download `name` with the server's `wisp.pull`; the server reports how far on its own progress.
 * @param {LanguageClient} running @param {string} name
 * @returns {Promise<boolean>} whether it worked (a failure is shown)
 */
async function pull(running, name) {
  const title = `wisp: downloading ${name}`;
  const where = { location: vscode.ProgressLocation.Notification, title };
  try {
    await vscode.window.withProgress(where, () => executeServerCommand(running, "wisp.pull", name));
    return true;
  } catch (error) {
    output.error(`wisp.pull ${name} failed: ${errorText(error)}`);
    vscode.window.showErrorMessage(`wisp: downloading ${name} failed: ${errorText(error)}`);
    return false;
  }
}

/**
 * wisp: Choose Model. Writing `wisp.model` is all it takes: the change reaches the server as
 * `workspace/didChangeConfiguration`, which reloads the model.
 */
async function chooseModel() {
  const running = runningClient();
  if (!running) {
    return;
  }
  /** @type {Promise<ModelItem[]>} */
  const items = executeServerCommand(running, "wisp.models").then(modelItems);
  /** @type {ModelItem | undefined} */
  let picked;
  try {
    picked = await vscode.window.showQuickPick(items, {
      title: "wisp: Choose Model",
      placeHolder: "The model for completions (wisp.model)",
      matchOnDescription: true,
      matchOnDetail: true,
    });
  } catch (error) {
    vscode.window.showErrorMessage(`wisp: could not list the models: ${errorText(error)}`);
    return;
  }
  if (!picked || (picked.pull && !(await pull(running, picked.pull)))) {
    return;
  }
  const config = vscode.workspace.getConfiguration("wisp");
  // A workspace's own `wisp.model` would hide a change to the user's.
  const target =
    config.inspect("model")?.workspaceValue === undefined
      ? vscode.ConfigurationTarget.Global
      : vscode.ConfigurationTarget.Workspace;
  await config.update("model", picked.pull ?? picked.setting ?? null, target);
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
    vscode.commands.registerCommand("wisp.chooseModel", chooseModel),
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
