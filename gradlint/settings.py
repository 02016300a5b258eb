"""The settings of each file, resolved as ruff resolves them: the closest configuration file wins.

`Resolver.settings_for(path)` gives the `Settings` of a file or folder: those of the closest
configuration file above it (see `config`), with the command line's overrides on top; the settings of
the current folder's configuration for a file under none (ruff's default). `--config FILE` gives every
file that file's settings, its relative paths read from the current folder; `--isolated` ignores every
configuration file. Each folder is looked up once, and each configuration file read once, per resolver:
a run over thousands of files reads a handful of files. A long-lived caller (the language server)
keeps a resolver and calls `clear()` when a configuration file changes.

`Settings` load no rule until a rule is needed (`rules()`), so a warm run never imports LibCST.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from .config import (
    Anchored,
    ConfigError,
    Configuration,
    config_in,
    find_config,
    load_configuration,
    validate_rule_options,
)
from .patterns import AnchoredPatterns, InvalidPattern, pattern_spec
from .selection import FixPolicy, UnknownSelector, check_selectors, resolve, safety_overrides

DEFAULT_CACHE_DIR = ".gradlint_cache"
DEFAULT_INCLUDE = ("*.py", "*.pyi", "*.ipynb")  # ruff's, less `**/pyproject.toml`


@dataclass(frozen=True)
class Resolved:
    """What loading the rules makes of the settings."""

    rules: tuple  # the enabled rule classes, by code
    options: dict  # rule name -> its options
    policy: FixPolicy


class Settings:
    """One configuration as applied: its root (the configuration file's folder) and what it decides."""

    def __init__(self, root: Path, configuration: Optional[Configuration] = None,
                 config_file: Optional[Path] = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.configuration = configuration = configuration or Configuration()
        self.config_file = config_file
        c = configuration
        self.respect_gitignore = c.respect_gitignore is not False
        self.force_exclude = bool(c.force_exclude)
        self.unsafe_fixes = bool(c.unsafe_fixes)
        # The default `include` is a suffix test: the walk asks it of every file.
        self._include_suffixes = (tuple(pattern[1:] for pattern in DEFAULT_INCLUDE)
                                  if c.include is None and not c.extend_include else None)
        try:
            include = c.include if c.include is not None else tuple(Anchored(self.root, p, "include")
                                                                     for p in DEFAULT_INCLUDE)
            self._include = [(AnchoredPatterns([a]), pattern_spec([a.text], a.where), a)
                             for a in (*include, *c.extend_include)]
            self._exclude = AnchoredPatterns([*(c.exclude or ()), *c.extend_exclude])
            self._per_file = [(AnchoredPatterns([entry.pattern]), pattern_spec([entry.pattern.text], entry.pattern.where),
                               entry) for entry in (*(c.per_file_ignores or ()), *c.extend_per_file_ignores)]
        except InvalidPattern as error:
            raise ConfigError(str(error)) from None

    def __repr__(self) -> str:
        return f"Settings({self.config_file or self.root})"

    # -- files --------------------------------------------------------------------------------------
    def includes(self, path: Path) -> bool:
        """Whether a folder's walk checks the file at the absolute `path`: `include` and `extend-include`
        (a pattern also matches the file's name alone, for a file outside the pattern's folder)."""
        if self._include_suffixes is not None:
            return path.name.endswith(self._include_suffixes)
        return any(patterns.match(path) or (anchored.base not in path.parents and by_name.match_file(path.name))
                   for patterns, by_name, anchored in self._include)

    def excludes(self, path: Path, is_dir: bool = False) -> bool:
        """Whether `exclude` or `extend-exclude` covers the absolute `path`."""
        return self._exclude.match(path, is_dir)

    def excludes_file_or_parent(self, path: Path) -> bool:
        """For a file named on the command line with `force-exclude`: the file, or a folder above it."""
        return self.excludes(path) or any(self.excludes(parent, True) for parent in path.parents)

    def ignored_selectors(self, path: Path) -> tuple[str, ...]:
        """The `per-file-ignores` selectors that apply to the absolute `path` (a pattern also matches the
        file's name alone, for a file outside the pattern's folder)."""
        out: list[str] = []
        for patterns, by_name, entry in self._per_file:
            if patterns.match(path) or (entry.pattern.base not in path.parents and by_name.match_file(path.name)):
                out.extend(entry.selectors)
        return tuple(dict.fromkeys(out))

    @property
    def cache_path(self) -> Path:
        """The configured cache folder: inside the folder of the configuration file that names it (a
        cloned repository's configuration must not make gradlint write elsewhere), and not that folder
        itself. `--cache-dir` and GRADLINT_CACHE_DIR, which the user types, may name any folder."""
        anchored = self.configuration.cache_dir
        if anchored is None:
            return self.root / DEFAULT_CACHE_DIR
        folder = Path(os.path.realpath(anchored.base / anchored.text))
        project = Path(os.path.realpath(anchored.base))
        if folder == project or project not in folder.parents:
            raise ConfigError(f"{anchored.where}: `cache-dir = {anchored.text!r}` must name a folder inside the "
                              f"project ({project}), not the project itself; for a cache elsewhere use "
                              "--cache-dir or GRADLINT_CACHE_DIR")
        return folder

    # -- rules --------------------------------------------------------------------------------------
    def key_data(self) -> dict[str, Any]:
        """Everything that changes a file's findings, for the cache key."""
        c = self.configuration
        return {
            "selections": [[s.select, s.extend_select, s.ignore, s.fixable, s.extend_fixable, s.unfixable]
                           for s in c.selections],
            "safety": [c.extend_safe_fixes, c.extend_unsafe_fixes],
            "options": c.rule_options,
            "per-file-ignores": [[str(entry.pattern.base), entry.pattern.text, entry.selectors]
                                 for _, _, entry in self._per_file],
        }

    @cached_property
    def resolved(self) -> Resolved:
        """The enabled rules, their options and the fix policy; imports the rules. ConfigError for an
        unknown rule, option or selector."""
        from .registry import every_rule

        rules = every_rule()
        codes = [rule.code for rule in rules]
        c = self.configuration
        try:
            enabled, fixable = resolve(codes, [r.code for r in rules if r.default_enabled], c.selections)
            applicability = safety_overrides(codes, c.extend_safe_fixes, c.extend_unsafe_fixes)
            for _, _, entry in self._per_file:
                check_selectors(codes, entry.selectors, f"{entry.pattern.where}: ")
        except UnknownSelector as error:
            raise ConfigError(str(error)) from None
        options = validate_rule_options(c, rules)
        policy = FixPolicy(frozenset(codes) - fixable, applicability)
        return Resolved(tuple(r for r in rules if r.code in enabled), options, policy)

    def describe(self) -> str:
        """`--show-settings`: what this configuration decides, one setting a line."""
        c = self.configuration
        resolved = self.resolved
        lines = [f"Settings path: {self.config_file or '(none: defaults)'}",
                 *(f"Extends: {source}" for source in c.sources[1:]),
                 f"root = {self.root}",
                 f"rules = [{', '.join(r.code for r in resolved.rules)}]",
                 f"unfixable = [{', '.join(sorted(resolved.policy.unfixable))}]",
                 "fix-safety = {" + ", ".join(f"{code} = {applicability}" for code, applicability
                                              in sorted(resolved.policy.applicability.items())) + "}",
                 f"unsafe-fixes = {str(self.unsafe_fixes).lower()}",
                 f"include = [{', '.join(_shown(a) for _, _, a in self._include)}]",
                 f"exclude = [{', '.join(_shown(a) for a in (*(c.exclude or ()), *c.extend_exclude))}]",
                 f"respect-gitignore = {str(self.respect_gitignore).lower()}",
                 f"force-exclude = {str(self.force_exclude).lower()}",
                 "per-file-ignores = {" + ", ".join(f"{_shown(entry.pattern)} = [{', '.join(entry.selectors)}]"
                                                    for _, _, entry in self._per_file) + "}",
                 f"cache-dir = {self.cache_path}"]
        for name, values in sorted(resolved.options.items()):
            lines += [f"{name}.{key} = {value!r}" for key, value in sorted(values.items())]
        return "\n".join(lines)


def _shown(anchored: Anchored) -> str:
    return f'"{anchored.text}" (in {anchored.base})'


class Resolver:
    """Settings per folder, cached. `overrides`: the command line's settings, applied over every file's."""

    def __init__(self, cwd: Path, overrides: Optional[Configuration] = None, config_file: Optional[Path] = None,
                 isolated: bool = False) -> None:
        self.cwd = Path(os.path.abspath(cwd))
        self.overrides = overrides = overrides or Configuration()
        self._fixed: Optional[Settings] = None
        if isolated:
            self._fixed = Settings(self.cwd, overrides)
        elif config_file is not None:  # every file, paths relative to the current folder (as in ruff)
            configuration = load_configuration(Path(os.path.abspath(config_file)), base=self.cwd)
            self._fixed = Settings(self.cwd, overrides.combine(configuration), Path(os.path.abspath(config_file)))
        self._by_folder: dict[Path, Settings] = {}
        self._by_file: dict[Path, Settings] = {}
        self._default: Optional[Settings] = None

    def clear(self) -> None:
        """Forget what was read (a configuration file changed)."""
        self._by_folder.clear()
        self._by_file.clear()
        self._default = None

    def settings_for(self, path: Path) -> Settings:
        """The settings of a file, or of a folder's contents. ConfigError for a broken configuration file."""
        absolute = Path(os.path.abspath(path))
        return self.for_folder(absolute if os.path.isdir(absolute) else absolute.parent)

    def for_folder(self, folder: Path) -> Settings:
        """The settings of the files in the absolute `folder`."""
        if self._fixed is not None:
            return self._fixed
        visited = []
        settings = None
        while folder not in self._by_folder:
            visited.append(folder)
            found = config_in(folder)
            if found is not None:
                settings = self._of_file(found)
                break
            if folder.parent == folder:
                settings = self.default()
                break
            folder = folder.parent
        if settings is None:
            settings = self._by_folder[folder]
        for seen in visited:
            self._by_folder[seen] = settings
        return settings

    def default(self) -> Settings:
        """For a file under no configuration file: the current folder's configuration, else the defaults."""
        if self._fixed is not None:
            return self._fixed
        if self._default is None:
            found = find_config(self.cwd)
            self._default = self._of_file(found) if found is not None else Settings(self.cwd, self.overrides)
        return self._default

    def _of_file(self, config_file: Path) -> Settings:
        if config_file not in self._by_file:
            configuration = self.overrides.combine(load_configuration(config_file))
            self._by_file[config_file] = Settings(config_file.parent, configuration, config_file)
        return self._by_file[config_file]


_RESOLVERS: dict[Path, Resolver] = {}


def settings_for(path: Path, cwd: Optional[Path] = None) -> Settings:
    """The settings gradlint applies to `path` when run from `cwd` (default: the current folder) without
    command-line overrides. Cached per `cwd`: call `forget()` when a configuration file changes, or keep
    a `Resolver` of your own."""
    cwd = Path(os.path.abspath(cwd or Path.cwd()))
    if cwd not in _RESOLVERS:
        _RESOLVERS[cwd] = Resolver(cwd)
    return _RESOLVERS[cwd].settings_for(path)


def forget() -> None:
    _RESOLVERS.clear()
