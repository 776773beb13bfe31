"""The VS Code extension: its manifest matches the server's settings, its code type-checks
against VS Code's and vscode-languageclient's declarations, and `vsce package` accepts it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from node_packages import NODE, NPM, npm_ci

from lsp_server.features import create_server
from lsp_server.settings import VALIDATORS, Settings, camel

EXTENSION = Path(__file__).resolve().parents[1] / "editor_configs" / "vscode"
MANIFEST = json.loads((EXTENSION / "package.json").read_text())
PROPERTIES: dict[str, dict[str, Any]] = MANIFEST["contributes"]["configuration"]["properties"]
CLIENT_ONLY = {"wisp.serverCommand", "wisp.trace.server"}
SERVER_PROPERTIES = {key: value for key, value in PROPERTIES.items() if key not in CLIENT_ONLY}
needs_node = pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not on PATH")


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_every_server_setting_is_contributed_with_its_default() -> None:
    defaults = Settings()
    expected = {
        f"wisp.{camel(f.name)}": _json_default(getattr(defaults, f.name))
        for f in dataclasses.fields(Settings)
    }
    contributed = {key: prop["default"] for key, prop in SERVER_PROPERTIES.items()}
    assert contributed == expected


@pytest.mark.parametrize("key", sorted(SERVER_PROPERTIES))
def test_contributed_choices_and_bounds_are_what_the_server_accepts(key: str) -> None:
    prop = SERVER_PROPERTIES[key]
    validate = VALIDATORS[_snake_name(key)]
    for value in prop.get("enum", []):
        validate(value)
    if "minimum" in prop:
        step = 1 if prop["type"] == "integer" else 0.5
        validate(prop["minimum"])
        validate(prop["maximum"])
        for outside in (prop["minimum"] - step, prop["maximum"] + step):
            with pytest.raises(ValueError):
                validate(outside)


def _snake_name(key: str) -> str:
    name = key.removeprefix("wisp.")
    return next(f.name for f in dataclasses.fields(Settings) if camel(f.name) == name)


def test_commands_and_entry_point() -> None:
    commands = {c["command"] for c in MANIFEST["contributes"]["commands"]}
    assert commands == {"wisp.restart", "wisp.showStats", "wisp.chooseModel"}
    # The language client registers each command the server advertises (executeCommandProvider)
    # under the same id: one of the extension's own with that id would clash with it.
    server_commands = set(create_server().protocol.fm.commands)
    assert {"wisp.didAccept", "wisp.stats", "wisp.models", "wisp.pull"} <= server_commands
    assert not commands & server_commands
    assert (EXTENSION / MANIFEST["main"]).is_file()
    assert MANIFEST["devDependencies"]["@types/vscode"] in MANIFEST["engines"]["vscode"]


def test_settings_that_choose_what_runs_are_user_settings_only() -> None:
    assert PROPERTIES["wisp.serverCommand"]["scope"] == "machine"
    assert PROPERTIES["wisp.trustRemoteCode"]["scope"] == "machine"
    assert PROPERTIES["wisp.allowPickle"]["scope"] == "machine"
    # a workspace that could pick the serving engine could send the user's code anywhere
    for key in ("backend", "endpoint", "apiKeyEnv", "remoteOptions"):
        assert PROPERTIES[f"wisp.{key}"]["scope"] == "machine"


@pytest.fixture(scope="module")
def installed() -> Path:
    seconds = npm_ci(EXTENSION)
    if seconds is not None:
        print(f"npm ci in editor_configs/vscode: {seconds:.1f} s")
    return EXTENSION


@needs_node
@pytest.mark.slow
def test_extension_typechecks(installed: Path) -> None:
    assert NPM is not None
    done = subprocess.run(
        [NPM, "run", "--silent", "typecheck"], cwd=installed, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_node
@pytest.mark.slow
def test_vsce_packages_a_vsix(installed: Path, tmp_path: Path) -> None:
    vsix = tmp_path / "wisp.vsix"
    done = subprocess.run(
        [str(installed / "node_modules" / ".bin" / "vsce"), "package",
         "--allow-missing-repository", "--out", str(vsix)],
        cwd=installed, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    names = zipfile.ZipFile(vsix).namelist()
    packages = {n.split("/")[2] for n in names if n.startswith("extension/node_modules/")}
    print(f"{vsix.stat().st_size / 1024:.0f} KiB, {len(names)} files, packages: {sorted(packages)}")
    assert {"extension/package.json", "extension/extension.js", "extension/readme.md"} <= set(names)
    assert "vscode-languageclient" in packages
    assert not packages & {"@vscode", "typescript", "@types"}  # development tools stay out
    assert "extension/tsconfig.json" not in names
    packaged = json.loads(zipfile.ZipFile(vsix).read("extension/package.json"))
    assert packaged["contributes"] == MANIFEST["contributes"]
