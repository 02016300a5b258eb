"""`[tool.gradlint]` in the nearest pyproject.toml, merged with the command line, as ruff does it.

```toml
[tool.gradlint]
select = ["GL"]                 # rule codes or prefixes; "ALL" for every rule (default: all)
extend-select = []
ignore = ["GL002"]
exclude = []                    # gitignore-style patterns, relative to this file's folder
extend-exclude = ["fixtures"]
respect-gitignore = true
per-file-ignores = { "tests/*" = ["GL001"] }
cache-dir = ".gradlint_cache"   # a folder inside the project that only gradlint writes to

[tool.gradlint.unguarded-norm-division]   # a rule's options, under its name
eps = 1e-4
```
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_LEVEL_KEYS = {
    "select", "extend-select", "ignore", "exclude", "extend-exclude", "respect-gitignore",
    "per-file-ignores", "cache-dir",
}


DEFAULT_CACHE_DIR = ".gradlint_cache"


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    root: Path
    config_file: Optional[Path] = None
    select: Optional[list[str]] = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    extend_exclude: list[str] = field(default_factory=list)
    respect_gitignore: bool = True
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    cache_dir: Optional[str] = None
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cache_path(self) -> Path:
        """The configured cache folder: inside the project (a cloned repository's pyproject.toml must not
        make gradlint write elsewhere), and not the project folder itself. `--cache-dir` and
        GRADLINT_CACHE_DIR, which the user types, may name any folder."""
        if self.cache_dir is None:
            return Path(os.path.abspath(self.root / DEFAULT_CACHE_DIR))
        folder = Path(os.path.realpath(self.root / self.cache_dir))
        root = Path(os.path.realpath(self.root))
        if folder == root or root not in folder.parents:
            raise ConfigError(f"{self.config_file}: `cache-dir = {self.cache_dir!r}` must name a folder inside "
                              f"the project ({root}), not the project itself; for a cache elsewhere use "
                              "--cache-dir or GRADLINT_CACHE_DIR")
        return folder


def find_config(start: Path) -> Optional[Path]:
    """The nearest pyproject.toml with a [tool.gradlint] table, from `start` upwards."""
    start = start.resolve()
    for folder in (start, *start.parents) if start.is_dir() else start.parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
                data = tomllib.loads(text)
            except (OSError, UnicodeDecodeError):
                continue
            except tomllib.TOMLDecodeError:
                if "tool.gradlint" in text:
                    return candidate  # ours, but broken: loading it gives the user the TOML error
                continue
            if "gradlint" in data.get("tool", {}):
                return candidate
    return None


def _string_list(table: dict, key: str, where: str, example: str = '["GL001"]') -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings, like {example}; got {_toml_value(value)}")
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def load_settings(config_file: Optional[Path], cwd: Path) -> Settings:
    if config_file is None:
        return Settings(root=cwd)
    where = str(config_file)
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {where}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where}: invalid TOML: {error}") from None
    table = data.get("tool", {}).get("gradlint", {}) if config_file.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [tool.gradlint] must be a table")
    settings = Settings(root=config_file.parent.resolve(), config_file=config_file)
    settings.select = _string_list(table, "select", where) if "select" in table else None
    settings.extend_select = _string_list(table, "extend-select", where)
    settings.ignore = _string_list(table, "ignore", where)
    settings.exclude = _string_list(table, "exclude", where, '["build", "*_pb2.py"]')
    settings.extend_exclude = _string_list(table, "extend-exclude", where, '["build", "*_pb2.py"]')
    respect_gitignore = table.get("respect-gitignore", True)
    if not isinstance(respect_gitignore, bool):
        raise ConfigError(f"{where}: `respect-gitignore` must be true or false; got {_toml_value(respect_gitignore)}")
    settings.respect_gitignore = respect_gitignore
    cache_dir = table.get("cache-dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir.strip()):
        raise ConfigError(f"{where}: `cache-dir` must be a folder name (a string); got {_toml_value(cache_dir)}")
    settings.cache_dir = cache_dir
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{where}: `per-file-ignores` must be a table of pattern = [codes]")
    settings.per_file_ignores = {k: _string_list(per_file, k, where) for k in per_file}
    for key, value in table.items():
        if key in TOP_LEVEL_KEYS:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: unknown setting `{key}` in [tool.gradlint]")
        settings.rule_options[key] = dict(value)
    return settings


def validate_rule_options(settings: Settings, rules: Sequence) -> dict[str, dict[str, Any]]:
    """Check `[tool.gradlint.<rule-name>]` tables against the rules' declared options."""
    by_name = {rule.name: rule for rule in rules}
    where = str(settings.config_file)
    options: dict[str, dict[str, Any]] = {}
    for rule_name, values in settings.rule_options.items():
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


def matches_selector(code: str, selector: str) -> bool:
    return selector.upper() == "ALL" or code.startswith(selector.upper())


def check_selectors(rules: Sequence, selectors: Sequence[str], where: str = "") -> None:
    codes = [rule.code for rule in rules]
    for selector in selectors:
        if not selector or not any(matches_selector(code, selector) for code in codes):
            raise ConfigError(f"{where}unknown rule selector: `{selector}` (rules: {', '.join(codes)})")


def select_rules(rules: Sequence, select: Optional[Sequence[str]], extend_select: Sequence[str],
                 ignore: Sequence[str]) -> list:
    """ruff's selection: (select or all) + extend-select - ignore; selectors are codes or prefixes."""
    check_selectors(rules, [*(select or []), *extend_select, *ignore])
    chosen = select if select is not None else ["ALL"]
    picked = [r for r in rules if any(matches_selector(r.code, s) for s in [*chosen, *extend_select])]
    return [r for r in picked if not any(matches_selector(r.code, s) for s in ignore)]
