"""Configuration files, read as ruff reads its own: which file configures a folder, what it says, `extend`.

A folder is configured by `.gradlint.toml`, else `gradlint.toml` (both without the `[tool.gradlint]`
header), else a `pyproject.toml` that has a `[tool.gradlint]` table (one without is not a configuration
file). The closest such file above a Python file configures it; files further up are not merged unless
it says `extend = "../pyproject.toml"` (a path relative to the file that says it).

```toml
[tool.gradlint]
extend = "../pyproject.toml"    # inherit another configuration file, then override it
select = ["GL"]                 # rule codes or prefixes; "ALL" for every rule
extend-select = []
ignore = ["GL002"]
fixable = ["ALL"]               # which rules' fixes may be applied
unfixable = []
extend-safe-fixes = []          # rules whose unsafe fixes count as safe
extend-unsafe-fixes = []        # rules whose safe fixes count as unsafe
unsafe-fixes = false            # apply unsafe fixes too (--unsafe-fixes)
include = ["*.py", "*.pyi", "*.ipynb"]   # the files a folder's walk checks (the default)
extend-include = []             # more of them, like ["*.pyw"]
exclude = []                    # gitignore-style patterns, relative to this file's folder
extend-exclude = ["fixtures"]
respect-gitignore = true
force-exclude = false           # apply `exclude` to files named on the command line too
per-file-ignores = { "tests/*" = ["GL001"] }
extend-per-file-ignores = {}
cache-dir = ".gradlint_cache"   # a folder inside the project that only gradlint writes to

[tool.gradlint.unguarded-norm-division]   # a rule's options, under its name
eps = 1e-4
```

A `Configuration` is one source's values (a file, its `extend` chain, or the command line), each
pattern kept with the folder it is relative to; `combine` layers them as ruff does. Nothing here
imports a rule: rule codes and option tables are checked when the rules are loaded (`settings`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .selection import RuleSelection

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILES = (".gradlint.toml", "gradlint.toml", "pyproject.toml")  # in a folder, the first one wins
LIST_KEYS = ("select", "extend-select", "ignore", "fixable", "extend-fixable", "unfixable", "extend-safe-fixes",
             "extend-unsafe-fixes", "include", "extend-include", "exclude", "extend-exclude")
BOOL_KEYS = ("unsafe-fixes", "respect-gitignore", "force-exclude")
TABLE_KEYS = ("per-file-ignores", "extend-per-file-ignores")
TOP_LEVEL_KEYS = {*LIST_KEYS, *BOOL_KEYS, *TABLE_KEYS, "cache-dir", "extend"}
PATTERN_EXAMPLE = '["build", "*_pb2.py"]'
INCLUDE_EXAMPLE = '["*.py", "*.ipynb"]'


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Anchored:
    """A pattern or path as written, with the folder it is relative to."""

    base: Path
    text: str
    where: str = field(default="", compare=False)  # the file (or flag) that wrote it, for error messages


@dataclass(frozen=True)
class PerFileIgnore:
    pattern: Anchored
    selectors: tuple[str, ...]


@dataclass(frozen=True)
class Configuration:
    """One source's settings; None where it says nothing (then a lower layer, or the default, decides)."""

    sources: tuple[Path, ...] = ()  # the files it was read from, the extending one first
    selections: tuple[RuleSelection, ...] = ()
    extend_safe_fixes: tuple[str, ...] = ()
    extend_unsafe_fixes: tuple[str, ...] = ()
    unsafe_fixes: Optional[bool] = None
    include: Optional[tuple[Anchored, ...]] = None
    extend_include: tuple[Anchored, ...] = ()
    exclude: Optional[tuple[Anchored, ...]] = None
    extend_exclude: tuple[Anchored, ...] = ()
    respect_gitignore: Optional[bool] = None
    force_exclude: Optional[bool] = None
    per_file_ignores: Optional[tuple[PerFileIgnore, ...]] = None
    extend_per_file_ignores: tuple[PerFileIgnore, ...] = ()
    cache_dir: Optional[Anchored] = None
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    option_sources: dict[str, str] = field(default_factory=dict)  # rule name -> where its table was written

    def combine(self, base: "Configuration") -> "Configuration":
        """This configuration over `base` (what it extends, or the file a command-line override applies to):
        its own values win; selections and the `extend-*` lists add to the base's."""
        options = {name: dict(values) for name, values in base.rule_options.items()}
        for name, values in self.rule_options.items():
            options.setdefault(name, {}).update(values)
        return Configuration(
            sources=self.sources + base.sources,
            selections=base.selections + self.selections,
            extend_safe_fixes=base.extend_safe_fixes + self.extend_safe_fixes,
            extend_unsafe_fixes=base.extend_unsafe_fixes + self.extend_unsafe_fixes,
            unsafe_fixes=_first(self.unsafe_fixes, base.unsafe_fixes),
            include=_first(self.include, base.include),
            extend_include=base.extend_include + self.extend_include,
            exclude=_first(self.exclude, base.exclude),
            extend_exclude=base.extend_exclude + self.extend_exclude,
            respect_gitignore=_first(self.respect_gitignore, base.respect_gitignore),
            force_exclude=_first(self.force_exclude, base.force_exclude),
            per_file_ignores=_first(self.per_file_ignores, base.per_file_ignores),
            extend_per_file_ignores=base.extend_per_file_ignores + self.extend_per_file_ignores,
            cache_dir=_first(self.cache_dir, base.cache_dir),
            rule_options=options,
            option_sources={**base.option_sources, **self.option_sources},
        )


def _first(value, fallback):
    return value if value is not None else fallback


# -- finding configuration files --------------------------------------------------------------------

def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def _pyproject_has_table(path: Path) -> bool:
    """Whether a pyproject.toml configures gradlint (a broken one that mentions it does: loading it then
    shows the user the TOML error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if "gradlint" not in text:
        return False  # the common case, without parsing the file
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "tool.gradlint" in text
    tool = data.get("tool")
    return isinstance(tool, dict) and "gradlint" in tool


def config_in(folder: Path) -> Optional[Path]:
    """The configuration file of `folder` itself, if it has one."""
    for name in CONFIG_FILES:
        candidate = folder / name
        # os.path.isfile, not Path.is_file: a path too long for the system is no file, not an error
        if os.path.isfile(candidate) and (name != "pyproject.toml" or _pyproject_has_table(candidate)):
            return candidate
    return None


def find_config(start: Path) -> Optional[Path]:
    """The closest configuration file from `start` (a folder, or a file's folder) upwards."""
    start = Path(os.path.abspath(start))
    for folder in (start, *start.parents) if start.is_dir() else start.parents:
        found = config_in(folder)
        if found is not None:
            return found
    return None


# -- reading one --------------------------------------------------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _strings(table: dict, key: str, where: str, example: str = '["GL001"]') -> Optional[tuple[str, ...]]:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings, like {example}; got {_toml_value(value)}")
    return tuple(value)


def _bool(table: dict, key: str, where: str) -> Optional[bool]:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` must be true or false; got {_toml_value(value)}")
    return value


def _per_file_ignores(table: dict, key: str, where: str, base: Path) -> Optional[tuple[PerFileIgnore, ...]]:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: `{key}` must be a table of pattern = [codes]")
    return tuple(PerFileIgnore(Anchored(base, pattern, f"{where}: {key} `{pattern}`"), _strings(value, pattern, where))
                 for pattern in value)


def configuration_from_table(table: dict, where: str, base: Path, source: Optional[Path] = None) -> Configuration:
    """A `[tool.gradlint]` table (or a gradlint.toml, or a `--config` override) checked for its shape."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [tool.gradlint] must be a table")
    if source is not None and source.name != "pyproject.toml" and "tool" in table:
        raise ConfigError(f"{where}: settings go at the top of {source.name}, without [tool.gradlint]")
    lists = {key: _strings(table, key, where, PATTERN_EXAMPLE if "exclude" in key
                           else INCLUDE_EXAMPLE if "include" in key else '["GL001"]')
             for key in LIST_KEYS}
    cache_dir = table.get("cache-dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
        raise ConfigError(f"{where}: `cache-dir` must be a folder name (a string); got {_toml_value(cache_dir)}")
    options: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        if key in TOP_LEVEL_KEYS:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: unknown setting `{key}` in [tool.gradlint]")
        options[key] = dict(value)
    selection = RuleSelection(select=lists["select"], extend_select=lists["extend-select"] or (),
                              ignore=lists["ignore"] or (), fixable=lists["fixable"],
                              extend_fixable=lists["extend-fixable"] or (), unfixable=lists["unfixable"] or (),
                              where=f"{where}: ")
    pfi = _per_file_ignores(table, "per-file-ignores", where, base)
    extend_pfi = _per_file_ignores(table, "extend-per-file-ignores", where, base) or ()
    return Configuration(
        sources=(source,) if source is not None else (),
        selections=() if selection.is_empty() else (selection,),
        extend_safe_fixes=lists["extend-safe-fixes"] or (),
        extend_unsafe_fixes=lists["extend-unsafe-fixes"] or (),
        unsafe_fixes=_bool(table, "unsafe-fixes", where),
        include=None if lists["include"] is None else tuple(Anchored(base, p, f"{where}: include")
                                                            for p in lists["include"]),
        extend_include=tuple(Anchored(base, p, f"{where}: extend-include") for p in lists["extend-include"] or ()),
        exclude=None if lists["exclude"] is None else tuple(Anchored(base, p, f"{where}: exclude")
                                                            for p in lists["exclude"]),
        extend_exclude=tuple(Anchored(base, p, f"{where}: extend-exclude") for p in lists["extend-exclude"] or ()),
        respect_gitignore=_bool(table, "respect-gitignore", where),
        force_exclude=_bool(table, "force-exclude", where),
        per_file_ignores=pfi,
        extend_per_file_ignores=extend_pfi,
        cache_dir=Anchored(base, cache_dir, where) if cache_dir is not None else None,
        rule_options=options,
        option_sources={name: where for name in options},
    )


def _table_of(path: Path) -> dict:
    data = _read_toml(path)
    if path.name != "pyproject.toml":
        return data
    tool = data.get("tool", {})
    return tool.get("gradlint", {}) if isinstance(tool, dict) else {}


def load_configuration(path: Path, base: Optional[Path] = None) -> Configuration:
    """The configuration of file `path`, with what it `extend`s under it. Relative paths in each file are
    relative to that file's folder, or all to `base` when given (a file named by `--config`: the current
    folder, as in ruff)."""
    chain: list[Path] = []
    current: Optional[Path] = Path(os.path.abspath(path))
    configuration: Optional[Configuration] = None
    layers = []
    while current is not None:
        if current in chain:
            cycle = " -> ".join(str(p) for p in [*chain, current])
            raise ConfigError(f"circular `extend` in configuration files: {cycle}")
        chain.append(current)
        if not os.path.isfile(current):
            raise ConfigError(f"{chain[-2]}: `extend` names {current}, which is not a file" if len(chain) > 1
                              else f"config file not found: {current}")
        table = _table_of(current)
        layer = configuration_from_table(table, str(current), base or current.parent, current)
        layers.append(layer)
        extend = table.get("extend") if isinstance(table, dict) else None
        if extend is not None and (not isinstance(extend, str) or not extend.strip()):
            raise ConfigError(f"{current}: `extend` must be a path to a configuration file; got {_toml_value(extend)}")
        current = (Path(os.path.abspath(current.parent / os.path.expandvars(os.path.expanduser(extend))))
                   if extend else None)
    for layer in reversed(layers):  # the most basic first
        configuration = layer if configuration is None else layer.combine(configuration)
    return configuration


def parse_override(text: str, cwd: Path) -> Configuration:
    """`--config KEY=VALUE`: one TOML assignment, as it would be written in gradlint.toml."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {text!r}: neither a configuration file nor a TOML `KEY = VALUE` pair "
                          f"(like `select = [\"GL001\"]`): {error}") from None
    if "extend" in table:
        raise ConfigError(f"--config {text!r}: `extend` cannot be set with --config; name the file itself")
    return configuration_from_table(table, f"--config {text!r}", cwd)


def validate_rule_options(configuration: Configuration, rules: Sequence) -> dict[str, dict[str, Any]]:
    """Check `[tool.gradlint.<rule-name>]` tables against the rules' declared options."""
    by_name = {rule.name: rule for rule in rules}
    options: dict[str, dict[str, Any]] = {}
    for rule_name, values in configuration.rule_options.items():
        where = configuration.option_sources.get(rule_name, "the configuration")
        rule = by_name.get(rule_name)
        if rule is None:
            raise ConfigError(f"{where}: unknown setting or rule `{rule_name}` in [tool.gradlint]")
        declared = {opt.name: opt for opt in rule.options}
        for key, value in values.items():
            if key not in declared:
                known = ", ".join(declared) or "none"
                raise ConfigError(f"{where}: {rule.code} ({rule_name}) has no option `{key}` (options: {known})")
            problem = declared[key].problem(value)
            if problem is not None:
                raise ConfigError(f"{where}: `{rule_name}.{key}` {problem}")
        options[rule_name] = values
    return options
