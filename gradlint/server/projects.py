"""The settings that apply to a document, resolved as the command line resolves them (`settings.Resolver`:
the closest configuration file wins), with a warm linter per configuration.

A project is built once per configuration file and kept until a configuration file changes (`clear`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..diagnostics import Finding
from ..discovery import DEFAULT_EXCLUDE
from ..selection import FixPolicy, matches
from ..settings import Resolver, Settings
from ..warm import WarmLinter


@dataclass
class Project:
    settings: Settings
    linter: WarmLinter  # every rule the settings enable; per-file ignores are applied to its findings

    @property
    def rules(self):
        return self.linter.rules

    @property
    def options(self):
        return self.linter.options

    @property
    def policy(self) -> FixPolicy:
        return self.settings.resolved.policy

    def ignored(self, path: Optional[Path]) -> tuple[str, ...]:
        """The `per-file-ignores` selectors of the document at `path` (none for an unsaved buffer)."""
        return self.settings.ignored_selectors(Path(os.path.abspath(path))) if path is not None else ()

    def rules_for(self, path: Optional[Path]) -> list:
        """The rules that apply to the document at `path`: the enabled ones less its per-file ignores."""
        skip = self.ignored(path)
        return [rule for rule in self.rules if not any(matches(rule.code, s) for s in skip)]

    def shown(self, path: Optional[Path], findings: list[Finding]) -> list[Finding]:
        """`findings` as the configuration shows them: less those per-file-ignores silences, with the
        fix policy (`unfixable`, `extend-safe-fixes`, ...) applied."""
        skip = self.ignored(path)
        return [self.policy.adjust(f) for f in findings
                if f.is_file_error or not any(matches(f.code, s) for s in skip)]

    def excludes(self, path: Path) -> bool:
        """Whether `exclude`, or a folder the command line skips (`.venv`, `site-packages`, ...), covers
        `path`: the editor then shows nothing for it, as `gradlint check --force-exclude` would."""
        absolute = Path(os.path.abspath(path))
        if any(part in DEFAULT_EXCLUDE for part in absolute.parent.parts):
            return True
        return self.settings.excludes_file_or_parent(absolute)


class Projects:
    def __init__(self) -> None:
        self._resolvers: dict[Path, Resolver] = {}
        self._by_settings: dict[int, Project] = {}

    def clear(self) -> None:
        self._resolvers.clear()
        self._by_settings.clear()

    def for_document(self, path: Optional[Path], fallback_root: Path) -> Project:
        """The project of a document at `path` (None: an unsaved buffer, configured as a file in
        `fallback_root`, the workspace's folder). Raises `config.ConfigError` for a broken configuration."""
        resolver = self._resolvers.get(fallback_root)
        if resolver is None:
            resolver = self._resolvers[fallback_root] = Resolver(fallback_root)
        settings = resolver.settings_for(path) if path is not None else resolver.default()
        project = self._by_settings.get(id(settings))
        if project is None or project.settings is not settings:
            resolved = settings.resolved
            project = self._by_settings[id(settings)] = Project(settings, WarmLinter(resolved.rules,
                                                                                     resolved.options))
        return project
