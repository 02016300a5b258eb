"""What a file declares the user can set, and whether anything reads it: a `--clip-grad` option that no
code applies is the author saying "clip" to a loop that does not.

A *setting* is an `argparse` option (`add_argument("--clip-grad", ...)`, read as `args.clip_grad`), a
parameter of a routine, an attribute a method stores (`self.grad_clip = grad_clip`), or a field of a class
(a dataclass or config class). It is *read* when its name is read anywhere in the file (as an attribute for
options, attributes and fields, as a name in its routine for a parameter) or appears as a string
(`getattr(args, "clip_grad")`, `cfg["clip_grad"]`). When the options object is spread (`vars(args)`,
`asdict(cfg)`, `args.__dict__`), any option may be read elsewhere: none is dead.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import libcst as cst

from .events import CALL, Routine, obj_key

# Names that say "gradient clipping": `clip_grad`, `grad_clip`, `max_grad_norm`, `gradient_clip_val`,
# `clip_grad_norm`. A bare `clip`, `clip_value`, `clip_norm` or `max_norm` says it only with a help text that
# speaks of gradients (`--clip`, "gradient clipping"): WGAN's `--clip_value` clips the critic's weights, and
# `clip_ratio`/`clip_range` are PPO's objective.
_CLIP_SETTING = re.compile(r"^(?=.*grad)(?=.*(?:clip|max_norm|max_grad|norm_clip)).*$")
_AMBIGUOUS_CLIP_SETTING = re.compile(r"^(clip|clip_norm|clipnorm|clip_value|clipvalue|max_norm)$")
_GRADIENT_WORD = re.compile(r"(?i)grad")
_SPREADS = frozenset({"vars", "asdict", "__dict__", "to_dict", "as_dict", "_asdict", "OmegaConf", "dict"})


@dataclass(frozen=True)
class Setting:
    name: str  # the name code reads it by (`clip_grad` for `--clip-grad`)
    kind: str  # option | parameter | attribute | field
    node: cst.CSTNode = field(repr=False)  # where it is declared
    routine: Optional[Routine] = field(repr=False)  # for a parameter or attribute, its routine


def is_clip_setting(name: str, help_text: Optional[str] = None) -> bool:
    """Does a setting of this name (and, for an option, help text) bound gradients?"""
    normal = name.lower().lstrip("-").replace("-", "_")
    if _CLIP_SETTING.match(normal):
        return True
    return bool(_AMBIGUOUS_CLIP_SETTING.match(normal) and help_text and _GRADIENT_WORD.search(help_text))


class Settings:
    def __init__(self, analysis) -> None:
        self.an = analysis
        self._dead: Optional[list] = None

    def dead_clip_settings(self) -> list:
        """The gradient-clipping settings of the file that nothing reads."""
        if self._dead is None:
            self._dead = self._find()
        return self._dead

    def _find(self) -> list:
        routines = self.an.all_routines()
        attr_reads: set = set()
        strings: Counter = Counter()
        spread = False
        for r in routines:
            attr_reads |= r.attr_reads
            strings.update(r.strings)
            spread |= bool((r.reads | r.attr_reads) & _SPREADS)
        for value in _class_level_strings(self.an.ctx.module):
            strings[value] += 1
        spread |= self._options_handed_on(routines)
        dead = []
        for setting in self._declared(routines):
            if setting.kind == "parameter":
                r = setting.routine
                if setting.name in r.reads or "locals" in r.reads:
                    continue
            else:
                if setting.name in attr_reads or spread and setting.kind == "option":
                    continue
                own = 1 if setting.kind == "option" and _dest_keyword(setting.node) == setting.name else 0
                if strings[setting.name] > own:
                    continue
            dead.append(setting)
        return dead

    def options_in(self, r: Routine) -> set:
        """The names that hold the parsed options in `r` (`args = parser.parse_args()`, a parameter that is
        handed them)."""
        self._follow_options()
        return self._holders.get(id(r), set())

    def _options_handed_on(self, routines: list) -> bool:
        self._follow_options()
        return self._handed_on

    def _follow_options(self) -> None:
        """Where the parsed options object goes: into names of this file's routines (`args = parse_args()`
        with `def parse_args(): return parser.parse_args()`, `main(args)`), or on to code we cannot see (a
        call of another module, a function with no caller here that returns them), which may read any
        option."""
        if getattr(self, "_holders", None) is not None:
            return
        from .calls import bind_arguments

        routines = self.an.all_routines()
        holders: dict = {}
        handed_on = False
        producers: set = set()  # routines that return the parsed options

        def parsed(value, r) -> bool:
            if isinstance(value, cst.Subscript):
                value = value.value
            if not isinstance(value, cst.Call):
                return False
            if isinstance(value.func, cst.Attribute) and value.func.attr.value in ("parse_args", "parse_known_args"):
                return True
            target = self.an.local_function(r, value.func.value) if isinstance(value.func, cst.Name) else None
            return target is not None and id(target) in producers

        for _ in range(6):
            grew = False
            for r in routines:
                names = holders.setdefault(id(r), set())
                for e in r.events:
                    if e.kind == "assign":
                        value = e.extra.get("value") or e.extra.get("unpacked")
                        if parsed(value, r) and not set(e.extra["targets"]) <= names:
                            names |= set(e.extra["targets"])
                            grew = True
                    elif e.kind == "exit" and e.extra.get("value") is not None and id(r) not in producers:
                        value = e.extra["value"]
                        if parsed(value, r) or obj_key(value) in names:
                            producers.add(id(r))
                            grew = True
                    elif e.kind == CALL and names and any(obj_key(a.value) in names for a in e.node.args):
                        target = self.an.resolve_call(r, e)
                        if target is None:
                            # Code we cannot see that also gets the model or the optimizer may clip with
                            # the options (`train_one_epoch(model, optimizer, args)`); a data or model
                            # builder (`make_loaders(args)`) has no gradients to clip.
                            handed_on |= self._gets_gradients(r, e)
                            continue
                        params = {p for p, v in bind_arguments(target, e.node).items() if obj_key(v) in names}
                        known = holders.setdefault(id(target), set())
                        if not params <= known:
                            known |= params
                            grew = True
            if not grew:
                break
        for r in routines:
            if id(r) in producers and not self.an.call_sites(r):
                handed_on = True  # returned to callers we cannot see
        self._holders, self._handed_on = holders, handed_on

    def _gets_gradients(self, r: Routine, e) -> bool:
        facts = self.an.facts
        func = e.node.func
        keys = [obj_key(a.value) for a in e.node.args]
        if isinstance(func, cst.Attribute):
            keys.append(obj_key(func.value))
        return any(k and facts.kind(r, k) in ("module", "optimizer", "accelerator", "fabric", "engine")
                   for k in keys)

    def _declared(self, routines: list) -> list:
        out = []
        for r in routines:
            for e in r.of(CALL):
                if e.extra.get("method") == "add_argument":
                    name = _option_dest(e.node)
                    if name and is_clip_setting(name, _keyword_string(e.node, "help")):
                        out.append(Setting(name, "option", e.node, None))
            for name in r.params:
                if is_clip_setting(name) and name not in ("self", "cls"):
                    out.append(Setting(name, "parameter", r.node, r))
            for a in r.events:
                if a.kind == "assign" and a.key and a.key.startswith("self.") and a.key.count(".") == 1:
                    attr = a.key.split(".", 1)[1]
                    if is_clip_setting(attr):
                        out.append(Setting(attr, "attribute", a.node, r))
        for stmt in self.an.ctx.module.body:
            if isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
                for inner in stmt.body.body:
                    if isinstance(inner, cst.SimpleStatementLine):
                        for small in inner.body:
                            target = small.target if isinstance(small, cst.AnnAssign) else (
                                small.targets[0].target if isinstance(small, cst.Assign) and small.targets else None)
                            if isinstance(target, cst.Name) and is_clip_setting(target.value):
                                out.append(Setting(target.value, "field", small, None))
        return out


def _option_dest(call: cst.Call) -> Optional[str]:
    dest = _dest_keyword(call)
    if dest:
        return dest
    names = [a.value.evaluated_value for a in call.args
             if a.keyword is None and isinstance(a.value, cst.SimpleString)
             and isinstance(a.value.evaluated_value, str)]
    long = [n for n in names if n.startswith("--")]
    chosen = long[0] if long else (names[0] if names else None)
    return chosen.lstrip("-").replace("-", "_") if chosen else None


def _dest_keyword(call: cst.Call) -> Optional[str]:
    return _keyword_string(call, "dest")


def _keyword_string(call: cst.Call, keyword: str) -> Optional[str]:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword and isinstance(a.value, (cst.SimpleString,
                                                                                        cst.ConcatenatedString)):
            value = a.value.evaluated_value
            return value if isinstance(value, str) else None
    return None


def _class_level_strings(module: cst.Module) -> list:
    out = []
    for stmt in module.body:
        if isinstance(stmt, cst.ClassDef) and isinstance(stmt.body, cst.IndentedBlock):
            for inner in stmt.body.body:
                if isinstance(inner, cst.SimpleStatementLine):
                    out.extend(n.evaluated_value for n in _strings(inner) if isinstance(n.evaluated_value, str))
    return out


def _strings(node) -> list:
    from .events import children

    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.SimpleString):
            out.append(n)
        else:
            stack.extend(children(n))
    return out
