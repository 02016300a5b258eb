"""`gradlint server` end to end: a real LSP client (pytest-lsp) drives the server in a subprocess.

Open a document, receive its diagnostics, apply a code action, receive the cleared diagnostics; unsafe
fixes only when the settings allow them; "fix all"; noqa; notebooks; configuration reloaded; a syntax
error or garbage from the client never takes the server down.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

from gradlint.diagnostics import Edit, Location  # noqa: E402
from gradlint.edits import apply_edits  # noqa: E402

SERVER = [sys.executable, "-m", "gradlint", "server"]  # `gradlint server`, as an editor starts it
DEFECT = textwrap.dedent("""\
    import torch


    def embed(x):
        return x / x.norm(dim=-1, keepdim=True)
""")
ADAM = "import torch\n\nopt = torch.optim.Adam(params, weight_decay=1e-2)\n"

@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    lsp_client.registrations = []

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        lsp_client.registrations.extend(params.registrations)

    yield
    await lsp_client.shutdown_session()


async def start(client: LanguageClient, root, options=None, resolve=True) -> None:
    code_action = types.CodeActionClientCapabilities(
        resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if resolve else None)
    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(
            text_document=types.TextDocumentClientCapabilities(code_action=code_action),
            workspace=types.WorkspaceClientCapabilities(
                did_change_watched_files=types.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True)),
            notebook_document=types.NotebookDocumentClientCapabilities(
                synchronization=types.NotebookDocumentSyncClientCapabilities())),
        root_uri=root.as_uri(), initialization_options=options))


async def open_document(client: LanguageClient, path, text: str) -> list[types.Diagnostic]:
    path.write_text(text)
    previous = client.diagnostics.get(path.as_uri())
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=path.as_uri(), language_id="python", version=1, text=text)))
    return await diagnostics_of(client, path.as_uri(), previous)


async def diagnostics_of(client: LanguageClient, uri: str, previous=None) -> list[types.Diagnostic]:
    """The diagnostics published for `uri` after `previous` (what the client held before the change)."""
    while True:
        current = client.diagnostics.get(uri)
        if current is not None and current is not previous:
            return list(current)
        await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 60)


async def change(client: LanguageClient, uri: str, version: int, text: str) -> list[types.Diagnostic]:
    previous = client.diagnostics.get(uri)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
    return await diagnostics_of(client, uri, previous)


def applied(text: str, edits: list[types.TextEdit]) -> str:
    """The text after the client applies `edits` (ASCII text: UTF-16 units are characters)."""
    return apply_edits(text, [Edit(e.new_text, Location(e.range.start.line + 1, e.range.start.character + 1),
                                   Location(e.range.end.line + 1, e.range.end.character + 1)) for e in edits])


async def actions_at(client: LanguageClient, uri: str, diagnostic: types.Diagnostic, only=None):
    return await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=diagnostic.range,
        context=types.CodeActionContext(diagnostics=[diagnostic], only=only)))


async def test_diagnostics_then_quick_fix_then_cleared(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    path = tmp_path / "model.py"
    [diagnostic] = await open_document(client, path, DEFECT)
    assert diagnostic.code == "GL001" and diagnostic.source == "gradlint"
    assert diagnostic.severity == types.DiagnosticSeverity.Warning
    assert diagnostic.message.startswith("Division by a norm with no eps guard")
    assert diagnostic.code_description.href.endswith("#unguarded-norm-division-gl001")
    assert (diagnostic.range.start.line, diagnostic.range.start.character) == (4, 11)

    actions = await actions_at(client, path.as_uri(), diagnostic)
    titles = [action.title for action in actions]
    assert any(title.endswith("(GL001, safe fix)") for title in titles)
    assert "Suppress GL001 with `# noqa: GL001`" in titles
    fix = next(a for a in actions if a.title.endswith("safe fix)"))
    fixed = applied(DEFECT, fix.edit.changes[path.as_uri()])
    assert "torch.nn.functional.normalize(x, dim=-1, eps=1e-6)" in fixed
    assert await change(client, path.as_uri(), 2, fixed) == []


async def test_noqa_action_silences_the_finding(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    path = tmp_path / "model.py"
    [diagnostic] = await open_document(client, path, DEFECT)
    actions = await actions_at(client, path.as_uri(), diagnostic, only=[types.CodeActionKind.QuickFix])
    noqa = next(a for a in actions if a.title.startswith("Suppress"))
    silenced = applied(DEFECT, noqa.edit.changes[path.as_uri()])
    assert "return x / x.norm(dim=-1, keepdim=True)  # noqa: GL001\n" in silenced
    assert await change(client, path.as_uri(), 2, silenced) == []


async def test_unsafe_fixes_only_when_the_settings_allow(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    path = tmp_path / "opt.py"
    [diagnostic] = await open_document(client, path, ADAM)
    assert diagnostic.code == "GL003"
    titles = [a.title for a in await actions_at(client, path.as_uri(), diagnostic)]
    assert titles == ["Suppress GL003 with `# noqa: GL003`"]

    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"gradlint": {"unsafeFixes": True}}))
    actions = await actions_at(client, path.as_uri(), diagnostic)
    unsafe = next(a for a in actions if a.title.endswith("(GL003, unsafe fix)"))
    assert not unsafe.is_preferred
    assert "torch.optim.AdamW(params" in applied(ADAM, unsafe.edit.changes[path.as_uri()])


async def test_fix_all_safe_is_a_source_action(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    path = tmp_path / "both.py"
    text = DEFECT + "\n\n" + ADAM.replace("import torch\n\n", "")
    diagnostics = await open_document(client, path, text)
    assert sorted(d.code for d in diagnostics) == ["GL001", "GL003"]
    [action] = await actions_at(client, path.as_uri(), diagnostics[0], only=[types.CodeActionKind.SourceFixAll])
    assert action.kind == "source.fixAll.gradlint" and action.edit is None  # computed on resolve
    resolved = await client.code_action_resolve_async(action)
    fixed = applied(text, resolved.edit.changes[path.as_uri()])
    assert [d.code for d in await change(client, path.as_uri(), 2, fixed)] == ["GL003"]  # the unsafe one stays


async def test_fix_all_without_resolve_support_comes_with_its_edit(client: LanguageClient, tmp_path):
    await start(client, tmp_path, resolve=False)
    path = tmp_path / "model.py"
    [diagnostic] = await open_document(client, path, DEFECT)
    [action] = await actions_at(client, path.as_uri(), diagnostic, only=[types.CodeActionKind.Source])
    assert await change(client, path.as_uri(), 2, applied(DEFECT, action.edit.changes[path.as_uri()])) == []


async def test_a_syntax_error_is_one_e999_and_the_server_goes_on(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    broken = tmp_path / "broken.py"
    [diagnostic] = await open_document(client, broken, "def f(:\n    return x / x.norm()\n")
    assert diagnostic.code == "E999" and diagnostic.severity == types.DiagnosticSeverity.Error
    assert diagnostic.range.start.line == 0
    assert [d.code for d in await open_document(client, tmp_path / "model.py", DEFECT)] == ["GL001"]
    assert await change(client, broken.as_uri(), 2, "def f(x):\n    return x\n") == []


async def test_configuration_is_read_again_when_pyproject_changes(client: LanguageClient, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.gradlint]\nignore = ["GL001"]\n')
    await start(client, tmp_path)
    path = tmp_path / "model.py"
    assert await open_document(client, path, DEFECT) == []
    assert [r.method for r in client.registrations] == [types.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    pyproject.write_text("[tool.gradlint]\n")
    previous = client.diagnostics[path.as_uri()]
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=pyproject.as_uri(), type=types.FileChangeType.Changed)]))
    assert [d.code for d in await diagnostics_of(client, path.as_uri(), previous)] == ["GL001"]


async def test_per_file_ignores_and_exclude_apply(client: LanguageClient, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradlint]\nper-file-ignores = { "tests/*" = ["GL001"] }\nextend-exclude = ["vendored"]\n')
    await start(client, tmp_path)
    for folder in ("tests", "vendored"):
        (tmp_path / folder).mkdir()
        assert await open_document(client, tmp_path / folder / "model.py", DEFECT) == []


async def test_each_document_gets_its_closest_configuration_and_its_fix_policy(client: LanguageClient, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.gradlint]\nunfixable = ["GL001"]\n')
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "gradlint.toml").write_text('ignore = ["GL001"]\n')  # closer: it wins in lab/
    await start(client, tmp_path)
    assert await open_document(client, tmp_path / "lab" / "model.py", DEFECT) == []
    path = tmp_path / "model.py"
    [diagnostic] = await open_document(client, path, DEFECT)
    titles = [a.title for a in await actions_at(client, path.as_uri(), diagnostic)]
    assert titles == ["Suppress GL001 with `# noqa: GL001`"]  # unfixable: no quick fix is offered


async def test_notebook_cells_get_their_own_diagnostics_and_fixes(client: LanguageClient, tmp_path):
    await start(client, tmp_path)
    notebook = tmp_path / "train.ipynb"
    cells = ["# Training", "%pip install torch\nimport torch", "x = torch.zeros(3, 4)\ny = x / x.norm(dim=-1, keepdim=True)"]
    uris = [f"{notebook.as_uri()}#cell{i}" for i in range(len(cells))]
    kinds = [types.NotebookCellKind.Markup, types.NotebookCellKind.Code, types.NotebookCellKind.Code]
    client.notebook_document_did_open(types.DidOpenNotebookDocumentParams(
        notebook_document=types.NotebookDocument(
            uri=notebook.as_uri(), notebook_type="jupyter-notebook", version=1,
            cells=[types.NotebookCell(kind=k, document=u) for k, u in zip(kinds, uris)]),
        cell_text_documents=[types.TextDocumentItem(uri=u, language_id="markdown" if i == 0 else "python",
                                                    version=1, text=t)
                             for i, (u, t) in enumerate(zip(uris, cells))]))
    [diagnostic] = await diagnostics_of(client, uris[2])
    assert diagnostic.code == "GL001" and diagnostic.range.start.line == 1  # row 2 of the third cell
    actions = await actions_at(client, uris[2], diagnostic, only=[types.CodeActionKind.QuickFix])
    fix = next(a for a in actions if a.title.endswith("safe fix)"))
    assert list(fix.edit.changes) == [uris[2]]
    fixed = applied(cells[2], fix.edit.changes[uris[2]])
    assert fixed == "x = torch.zeros(3, 4)\ny = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)"
    previous = client.diagnostics[uris[2]]
    client.notebook_document_did_change(types.DidChangeNotebookDocumentParams(
        notebook_document=types.VersionedNotebookDocumentIdentifier(uri=notebook.as_uri(), version=2),
        change=types.NotebookDocumentChangeEvent(cells=types.NotebookDocumentCellChanges(text_content=[
            types.NotebookDocumentCellContentChanges(
                document=types.VersionedTextDocumentIdentifier(uri=uris[2], version=2),
                changes=[types.TextDocumentContentChangeWholeDocument(text=fixed)])]))))
    assert await diagnostics_of(client, uris[2], previous) == []


def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_message(stream) -> dict:
    length = None
    while True:
        line = stream.readline()
        if not line:
            raise EOFError("the server closed its output")
        if line.startswith(b"Content-Length:"):
            length = int(line.split(b":")[1])
        elif line == b"\r\n" and length is not None:
            return json.loads(stream.read(length))


def test_garbage_from_the_client_gets_an_error_response_not_a_dead_server(tmp_path):
    server = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        server.stdin.write(_frame(b"{this is not json"))
        server.stdin.write(_frame(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "textDocument/codeAction",
                                              "params": {"textDocument": 5}}).encode()))
        server.stdin.flush()
        parse_error = _read_message(server.stdout)
        assert parse_error["id"] is None and parse_error["error"]["code"] == -32700
        invalid = _read_message(server.stdout)
        assert invalid["id"] == 7 and invalid["error"]["code"] == -32602
        server.stdin.write(_frame(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "initialize", "params": {
            "processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}}}).encode()))
        server.stdin.flush()
        reply = _read_message(server.stdout)
        assert reply["id"] == 8 and reply["result"]["serverInfo"]["name"] == "gradlint"
    finally:
        server.kill()
        server.wait()


def test_without_the_server_extra_the_command_says_what_to_install(gradlint, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pygls" else find_spec(name, *a))
    code, out, err = gradlint(tmp_path, "server")
    assert code == 2 and out == ""
    assert "needs pygls" in err and "pip install 'gradlint[server]'" in err
