"""The language server: diagnostics as documents change, quick fixes, "fix all", noqa, notebooks.

Each open Python document (or notebook) is linted on open, change and save with its project's warm
linter (`gradlint.warm`: only the edited region is parsed again), and the findings are kept for the code
actions asked about that version. Several changes that arrive together are linted once, at the last.

Settings, from `initializationOptions` or `workspace/didChangeConfiguration` (under `gradlint`):
`unsafeFixes` (default false) offers the unsafe quick fixes too. Rules, options, exclusions, per-file
ignores and the fix policy come from each document's closest configuration file (`pyproject.toml`,
`gradlint.toml`, `.gradlint.toml`), as the command line resolves them, read again when one changes (the
server asks the client to watch them; saving one in the editor works too).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcParseError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path
from pygls.workspace import TextDocument

from .. import __version__
from ..config import CONFIG_FILES, ConfigError
from ..diagnostics import Finding
from ..documents import lint_cells
from ..engine import FixBrokeCode, fix_text
from ..notebook import CellEditError, CellModule
from .convert import diagnostic, diagnostics, noqa_edit, text_edit, whole_document_edits
from .projects import Project, Projects

logger = logging.getLogger(__name__)

FIX_ALL = "source.fixAll.gradlint"
EXACT_AFTER_S = 0.3  # a pause in typing after which verdicts that need the whole module are brought up to date
PYTHON_SUFFIXES = (".py", ".pyi")
_UNREADABLE = SimpleNamespace(jsonrpc="unreadable")  # handle_message logs and drops it


class _Protocol(LanguageServerProtocol):
    """Answers a request it cannot read (wrong params) with a JSON-RPC error, as the spec asks."""

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "id" in data and "method" in data:
                self._send_response(data["id"], error=error.to_response_error())
                return _UNREADABLE
            raise


@dataclass
class _Linted:
    """The findings of one version of a document, for the code actions asked about it."""

    path: Optional[Path]
    project: Project
    findings: list[Finding]
    cell_uris: list[str] = field(default_factory=list)  # a notebook: cell number - 1 -> its document's uri


class GradlintServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(
            "gradlint", __version__, protocol_cls=_Protocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            notebook_document_sync=types.NotebookDocumentSyncOptions(
                notebook_selector=[types.NotebookDocumentFilterWithCells(
                    notebook="jupyter-notebook", cells=[types.NotebookCellLanguage(language="python")])],
                save=True))
        self.projects = Projects()
        self.unsafe_fixes = False
        self.linted: dict[str, _Linted] = {}  # text document or notebook uri -> its last lint
        self._pending: dict[str, bool] = {}  # uri -> is a notebook; linted at the next turn of the loop
        self._exact_timers: dict[str, asyncio.TimerHandle] = {}
        self._shown: set[str] = set()

    # -- errors --------------------------------------------------------------------------------------
    def report_server_error(self, error: Exception, source) -> None:
        if isinstance(error, ValueError) and not isinstance(error, JsonRpcException):  # not JSON at all
            # JSON-RPC: a parse error is answered with `"id": null` (pygls' own types would leave it out).
            self.protocol._send_data({"jsonrpc": "2.0", "id": None, "error": {
                "code": JsonRpcParseError.CODE, "message": f"Parse error: {error}"}})
            return
        logger.error("gradlint server: %s", error)

    def _show_once(self, message: str, kind=types.MessageType.Error) -> None:
        if message not in self._shown:
            self._shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- settings and projects -----------------------------------------------------------------------
    def apply_settings(self, settings: Any) -> None:
        if isinstance(settings, dict):
            settings = settings.get("gradlint", settings)
            if isinstance(settings, dict) and "unsafeFixes" in settings:
                self.unsafe_fixes = bool(settings["unsafeFixes"])

    def root(self) -> Path:
        root = self.workspace.root_path
        return Path(root) if root else Path.cwd()

    def project_for(self, path: Optional[Path]) -> Optional[Project]:
        try:
            return self.projects.for_document(path, self.root())
        except ConfigError as error:
            self._show_once(f"gradlint: {error}")
            return None

    def reload(self) -> None:
        """A pyproject.toml changed: read the configurations again and lint every open document."""
        self.projects.clear()
        self._shown.clear()
        for uri in list(self.workspace.text_documents):
            if self.workspace.get_notebook_document(cell_uri=uri) is None:
                self.schedule(uri, notebook=False)
        for uri in list(self.workspace.notebook_documents):
            self.schedule(uri, notebook=True)

    # -- linting -------------------------------------------------------------------------------------
    def schedule(self, uri: str, *, notebook: bool) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._lint_pending)
        self._pending[uri] = notebook

    def _lint_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for uri, notebook in pending.items():
            try:
                self.lint_notebook(uri) if notebook else self.lint_document(uri)
            except Exception as error:  # one document's failure must not take the server down
                logger.exception("linting %s failed", uri)
                self._show_once(f"gradlint: internal error while checking {uri}: {type(error).__name__}: {error}")

    def _publish(self, uri: str, diagnostics: list, version: Optional[int]) -> None:
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version))

    def check(self, uri: str, *, notebook: bool, quick: bool = False, edits=False) -> Optional[tuple]:
        """(_Linted, exact) for the current text of a document or notebook; None when it is not checked
        (not Python, excluded, or its configuration is broken). `edits`: as `WarmLinter.lint`, in the
        rows of the document (a notebook: of its joined cells)."""
        if notebook:
            nb = self.workspace.get_notebook_document(notebook_uri=uri)
            if nb is None:
                return None
            path = _path(uri)
        else:
            document = self.workspace.get_text_document(uri)
            path = _path(uri)
            if not _is_python(document, path):
                return None
        project = self.project_for(path)
        if project is None or (path is not None and project.excludes(path)):
            return None
        name = str(path) if path is not None else uri
        exact = [True]

        def lint(text: str, describe_row=None, describe_key=None, units=()) -> list[Finding]:
            if quick:
                found, exact[0] = project.linter.lint_quick(text, name, describe_row=describe_row,
                                                            describe_key=describe_key, units=units)
                return found
            return project.linter.lint(text, name, edits=edits, describe_row=describe_row, describe_key=describe_key,
                                       units=units)

        if notebook:
            module = CellModule.join(self._cell_sources(nb))
            found = lint_cells(module, name, lambda text, describe: lint(text, describe, module.layout, module.starts))
            cell_uris = [cell.document for cell in nb.cells]
        else:
            found, cell_uris = lint(document.source), []
        return _Linted(path, project, project.shown(path, found), cell_uris), exact[0]

    def lint_document(self, uri: str, *, exact: bool = False) -> None:
        document = self.workspace.get_text_document(uri)
        checked = self.check(uri, notebook=False, quick=not exact)
        if checked is None:
            self.linted.pop(uri, None)
            self._publish(uri, [], document.version)
            return
        linted, done = checked
        self.linted[uri] = linted
        self._publish(uri, diagnostics(linted.findings, document), document.version)
        if not done:
            self._exact_later(uri, notebook=False, version=document.version)

    def lint_notebook(self, uri: str, *, exact: bool = False) -> None:
        notebook = self.workspace.get_notebook_document(notebook_uri=uri)
        if notebook is None:
            return
        checked = self.check(uri, notebook=True, quick=not exact)
        linted, done = checked if checked is not None else (None, True)
        if linted is None:
            self.linted.pop(uri, None)
        else:
            self.linted[uri] = linted
        findings = linted.findings if linted is not None else []
        for number, cell in enumerate(notebook.cells, start=1):
            document = self.workspace.get_text_document(cell.document)
            self._publish(cell.document, diagnostics([f for f in findings if f.cell == number], document),
                          document.version)
        if not done:
            self._exact_later(uri, notebook=True, version=notebook.version)

    def _exact_later(self, uri: str, *, notebook: bool, version) -> None:
        """The quick lint reused whole-module verdicts of an older text: lint exactly once typing pauses."""
        timer = self._exact_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

        def run() -> None:
            self._exact_timers.pop(uri, None)
            current = (self.workspace.get_notebook_document(notebook_uri=uri) if notebook
                       else self.workspace.text_documents.get(uri))
            if current is not None and current.version == version:
                try:
                    self.lint_notebook(uri, exact=True) if notebook else self.lint_document(uri, exact=True)
                except Exception as error:
                    logger.exception("linting %s failed", uri)
                    self._show_once(f"gradlint: internal error while checking {uri}: {type(error).__name__}: {error}")

        self._exact_timers[uri] = asyncio.get_running_loop().call_later(EXACT_AFTER_S, run)

    def _cell_sources(self, notebook: types.NotebookDocument) -> list[Optional[str]]:
        return [self.workspace.get_text_document(cell.document).source
                if cell.kind == types.NotebookCellKind.Code else None for cell in notebook.cells]

    # -- code actions --------------------------------------------------------------------------------
    def code_actions(self, params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        notebook = self.workspace.get_notebook_document(cell_uri=uri)
        linted = self.linted.get(notebook.uri if notebook is not None else uri)
        if linted is None:
            return []
        document = self.workspace.get_text_document(uri)
        if notebook is not None:
            number = linted.cell_uris.index(uri) + 1 if uri in linted.cell_uris else None
            findings = [f for f in linted.findings if f.cell == number]
        else:
            findings = linted.findings
        only = params.context.only

        def wanted(kind: str) -> bool:
            return not only or any(kind == o or kind.startswith(f"{o}.") for o in only)

        actions = []
        lines = document.lines
        here = [f for f in findings if _overlaps(diagnostic(f, document, lines).range, params.range)]
        if wanted(types.CodeActionKind.QuickFix) and here:
            for finding in self._with_edits(here, notebook, uri, linted):
                shown = diagnostic(finding, document)
                if _overlaps(shown.range, params.range):
                    actions.extend(self._quick_fixes(finding, shown, document, linted))
        if wanted(FIX_ALL) and any(f.fixable(False) for f in linted.findings):
            action = types.CodeAction(title="gradlint: apply all safe fixes", kind=FIX_ALL,
                                      data={"uri": notebook.uri if notebook is not None else uri})
            if not self._resolves_edits():
                action.edit = self.fix_all_edit(action.data["uri"])
            actions.append(action)
        return actions

    def _with_edits(self, findings: list[Finding], notebook, uri: str, linted: _Linted) -> list[Finding]:
        """The findings of the document again, with their fixes' edits for the rows of `findings` (diagnostics
        are published without edits: each costs a rewrite)."""
        first = min(f.location.row for f in findings)
        last = max(f.end_location.row for f in findings)
        if notebook is None:
            checked = self.check(uri, notebook=False, edits=(first, last))
            return checked[0].findings if checked is not None else []
        module = CellModule.join(self._cell_sources(notebook))
        number = findings[0].cell
        cell = next(c for c in module.cells if c.number == number)
        offset = cell.first_row - 1
        checked = self.check(notebook.uri, notebook=True, edits=(first + offset, last + offset))
        return [f for f in checked[0].findings if f.cell == number] if checked is not None else []

    def _quick_fixes(self, finding: Finding, shown: types.Diagnostic, document: TextDocument,
                     linted: _Linted) -> list[types.CodeAction]:
        actions = []
        fix = finding.fix
        if fix is not None and fix.edits and finding.fixable(self.unsafe_fixes):
            safety = "safe" if finding.fixable(False) else "unsafe"
            changes: dict[str, list] = {}
            for edit in fix.edits:
                target = linted.cell_uris[edit.cell - 1] if edit.cell else document.uri
                changes.setdefault(target, []).append(text_edit(edit, self.workspace.get_text_document(target)))
            actions.append(types.CodeAction(
                title=f"{fix.message} ({finding.code}, {safety} fix)", kind=types.CodeActionKind.QuickFix,
                diagnostics=[shown], is_preferred=safety == "safe", edit=types.WorkspaceEdit(changes=changes)))
        if not finding.is_file_error:
            edit = noqa_edit(finding, document)
            if edit is not None:
                actions.append(types.CodeAction(
                    title=f"Suppress {finding.code} with `# noqa: {finding.code}`",
                    kind=types.CodeActionKind.QuickFix, diagnostics=[shown],
                    edit=types.WorkspaceEdit(changes={document.uri: [edit]})))
        return actions

    def _resolves_edits(self) -> bool:
        try:
            support = self.client_capabilities.text_document.code_action.resolve_support
        except AttributeError:
            return False
        return support is not None and "edit" in support.properties

    def fix_all_edit(self, uri: str) -> types.WorkspaceEdit:
        """Every safe fix of the document (or notebook), as edits of its current text."""
        linted = self.linted.get(uri)
        if linted is None:
            return types.WorkspaceEdit(changes={})
        project = linted.project
        rules, options, policy = project.rules_for(linted.path), project.options, project.policy
        notebook = self.workspace.get_notebook_document(notebook_uri=uri)
        name = str(linted.path) if linted.path is not None else uri
        try:
            if notebook is None:
                document = self.workspace.get_text_document(uri)
                fixed = fix_text(document.source, name, rules, options, policy=policy).text
                return types.WorkspaceEdit(changes={uri: whole_document_edits(document, fixed)})
            module = CellModule.join(self._cell_sources(notebook))
            fixed = fix_text(module.text, name, rules, options, policy=policy).text
            changes = {}
            for number, source in module.sources_after(fixed).items():
                cell_uri = notebook.cells[number - 1].document
                changes[cell_uri] = whole_document_edits(self.workspace.get_text_document(cell_uri), source)
            return types.WorkspaceEdit(changes=changes)
        except (FixBrokeCode, CellEditError) as error:
            self._show_once(f"gradlint: fixes not applied: {error}", types.MessageType.Warning)
            return types.WorkspaceEdit(changes={})


def _path(uri: str) -> Optional[Path]:
    path = to_fs_path(uri) if uri.startswith("file:") else None
    return Path(path) if path else None


def _is_python(document: TextDocument, path: Optional[Path]) -> bool:
    if document.language_id:
        return document.language_id == "python"
    return path is not None and path.suffix in PYTHON_SUFFIXES


def _overlaps(a: types.Range, b: types.Range) -> bool:
    def key(position: types.Position):
        return (position.line, position.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)


def _is_config(uri: str) -> bool:
    return uri.rpartition("/")[2] in CONFIG_FILES


def build() -> GradlintServer:
    server = GradlintServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: GradlintServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    def initialized(ls: GradlintServer, params: types.InitializedParams) -> None:
        try:
            dynamic = ls.client_capabilities.workspace.did_change_watched_files.dynamic_registration
        except AttributeError:
            dynamic = False
        if dynamic:
            ls.client_register_capability(types.RegistrationParams(registrations=[types.Registration(
                id="gradlint-pyproject", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                register_options=types.DidChangeWatchedFilesRegistrationOptions(
                    watchers=[types.FileSystemWatcher(glob_pattern=f"**/{name}") for name in CONFIG_FILES]))]))

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: GradlintServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: GradlintServer, params: types.DidChangeWatchedFilesParams) -> None:
        if any(_is_config(change.uri) for change in params.changes):
            ls.reload()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: GradlintServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, notebook=False)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: GradlintServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        if ls.workspace.get_notebook_document(cell_uri=uri) is None:
            ls.schedule(uri, notebook=False)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: GradlintServer, params: types.DidSaveTextDocumentParams) -> None:
        uri = params.text_document.uri
        if _is_config(uri):
            ls.reload()
        elif ls.workspace.get_notebook_document(cell_uri=uri) is None:
            ls.schedule(uri, notebook=False)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: GradlintServer, params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.linted.pop(uri, None)
        ls._pending.pop(uri, None)
        ls._publish(uri, [], None)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
    def notebook_did_open(ls: GradlintServer, params: types.DidOpenNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri, notebook=True)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def notebook_did_change(ls: GradlintServer, params: types.DidChangeNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri, notebook=True)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
    def notebook_did_save(ls: GradlintServer, params: types.DidSaveNotebookDocumentParams) -> None:
        ls.schedule(params.notebook_document.uri, notebook=True)

    @server.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def notebook_did_close(ls: GradlintServer, params: types.DidCloseNotebookDocumentParams) -> None:
        uri = params.notebook_document.uri
        ls.linted.pop(uri, None)
        ls._pending.pop(uri, None)
        for cell in params.cell_text_documents:
            ls._publish(cell.uri, [], None)

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL], resolve_provider=True))
    def code_action(ls: GradlintServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        return ls.code_actions(params)

    @server.feature(types.CODE_ACTION_RESOLVE)
    def resolve_code_action(ls: GradlintServer, action: types.CodeAction) -> types.CodeAction:
        if action.edit is None and isinstance(action.data, dict) and "uri" in action.data:
            action.edit = ls.fix_all_edit(action.data["uri"])
        return action

    return server


def serve() -> None:
    logging.basicConfig(level=os.environ.get("GRADLINT_LOG", "WARNING"), format="%(levelname)s %(message)s")
    server = build()
    from ..registry import all_rules

    all_rules()  # imported now, so that the first document does not wait for it, and frozen below
    # As in the command line's runner: LibCST's short-lived trees are freed by reference counting, and
    # the cyclic collector's frequent passes over everything imported and kept only cost time.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    server.start_io()


