"""The configuration that applies to a document: the nearest pyproject.toml with `[tool.gradlint]`, as the
command line finds it, with its rules, options, exclusions and per-file ignores, and a warm linter.

A project is built once per configuration file and kept until a pyproject.toml changes (`clear`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..config import Settings, find_config, load_settings, select_rules, validate_rule_options
from ..diagnostics import Finding
from ..discovery import DEFAULT_EXCLUDE, Excluder
from ..warm import WarmLinter


@dataclass
class Project:
    settings: Settings
    linter: WarmLinter
    keep: Callable[[Path, Finding], bool]  # False for a finding that per-file-ignores silences
    _excluder: Excluder

    @property
    def rules(self):
        return self.linter.rules

    @property
    def options(self):
        return self.linter.options

    def excludes(self, path: Path) -> bool:
        """Whether `exclude`, or a folder the command line skips (`.venv`, `site-packages`, ...), covers
        `path`: the editor then shows nothing for it, as `gradlint check --force-exclude` would."""
        absolute = Path(os.path.abspath(path))
        if any(part in DEFAULT_EXCLUDE for part in absolute.parent.parts):
            return True
        return self._excluder.user_excluded(absolute, False) or any(
            self._excluder.user_excluded(parent, True) for parent in absolute.parents)


class Projects:
    def __init__(self) -> None:
        self._by_config: dict[Optional[Path], Project] = {}
        self._config_of: dict[Path, Optional[Path]] = {}

    def clear(self) -> None:
        self._by_config.clear()
        self._config_of.clear()

    def for_document(self, path: Optional[Path], fallback_root: Path) -> Project:
        """The project of a document at `path` (None: an unsaved buffer, configured from `fallback_root`).
        Raises `config.ConfigError` for a broken configuration."""
        folder = path.parent if path is not None else fallback_root
        if folder not in self._config_of:
            self._config_of[folder] = find_config(folder)
        config = self._config_of[folder]
        project = self._by_config.get(config)
        if project is None:
            project = self._by_config[config] = _load(config, fallback_root)
        return project


def _load(config: Optional[Path], fallback_root: Path) -> Project:
    from ..config import matches_selector
    from ..registry import all_rules
    from ..runner import _per_file_skips

    settings = load_settings(config, fallback_root)
    rules = all_rules()
    options = validate_rule_options(settings, rules)
    selected = select_rules(rules, settings.select, settings.extend_select, settings.ignore)
    excluder = Excluder(settings.root, [*settings.exclude, *settings.extend_exclude], settings.respect_gitignore)
    skips = _per_file_skips(settings)

    def keep(path: Path, finding: Finding) -> bool:
        return not any(matches_selector(finding.code, selector) for selector in skips(path))

    return Project(settings, WarmLinter(selected, options), keep, excluder)
