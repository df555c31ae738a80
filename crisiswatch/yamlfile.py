"""YAML documents that remember where every key was written, for `file:line:column` messages.

Config and rules are validated by pydantic models that forbid unknown keys; this module maps a
validation error back to the line an editor typed and suggests the key they probably meant.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import pydantic
import yaml

Path_ = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_MAX_NODES = 200_000  # an alias bomb must not make a check run forever
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # YAML's line breaks


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a file, pointing at where it was written."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class ProblemsError(Exception):
    """Raised when a document has problems; carries every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """Parsed data plus the (line, column), 1-based, of every value and every key."""

    file: str
    data: Any
    marks: dict[Path_, tuple[int, int]]  # where each value starts
    key_marks: dict[Path_, tuple[int, int]]  # where each mapping key was written

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The mark of the deepest part of `path` that was written in the file."""
        for end in range(len(path), -1, -1):
            mark = (key and self.key_marks.get(path[:end])) or self.marks.get(path[:end])
            if mark:
                return mark
        return (1, 1)

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, column = self.where(path, key=key)
        return Problem(self.file, line, column, message)


def load_yaml(path: Path, *, label: str | None = None) -> YamlDocument:
    """Read one YAML document; raise `ProblemsError` for unreadable files or bad syntax."""
    name = label or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProblemsError([Problem(name, 1, 1, f"cannot read the file: {exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")  # all that precedes the bad byte reads
        message = f"not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        where = _reader_mark(before, len(before))
        raise ProblemsError([Problem(name, *where, message)]) from None
    return parse_yaml(text, name)


_TOO_DEEP = "invalid YAML: nested too deeply (no config or rule file needs this many levels)"


def parse_yaml(text: str, name: str) -> YamlDocument:
    try:
        loader = yaml.SafeLoader(text)  # checks every character at once: a control one is refused
    except yaml.reader.ReaderError as exc:
        message = f"invalid YAML: character U+{exc.character:04X} is not allowed here; remove it"
        raise ProblemsError([Problem(name, *_reader_mark(text, exc.position), message)]) from None
    node: yaml.Node | None = None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"invalid YAML: {exc.problem or exc.context}{_yaml_hint(exc)}"
        raise ProblemsError([Problem(name, line, column, message)]) from None
    except yaml.YAMLError as exc:
        raise ProblemsError([Problem(name, 1, 1, f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ProblemsError([Problem(name, 1, 1, _TOO_DEEP)]) from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # `2024-02-30`, `!!int x`
        where = _unbuildable(node) if node is not None else (1, 1)
        raise ProblemsError([Problem(name, *where, f"invalid YAML value: {exc}")]) from None
    finally:
        loader.dispose()
    marks: dict[Path_, tuple[int, int]] = {}
    key_marks: dict[Path_, tuple[int, int]] = {}
    problems: list[Problem] = []
    if node is not None:
        try:
            _walk(node, (), (marks, key_marks), problems, name, [0])
        except RecursionError:
            raise ProblemsError([Problem(name, 1, 1, _TOO_DEEP)]) from None
    if problems:
        raise ProblemsError(problems)
    return YamlDocument(name, data, marks, key_marks)


def _unbuildable(root: yaml.Node) -> tuple[int, int]:
    """Where the first value that cannot be built is (a date that does not exist, say)."""
    builder = yaml.SafeLoader("")
    stack, visited = [root], 0
    while stack and visited < _MAX_NODES:
        node = stack.pop()
        visited += 1
        if isinstance(node, yaml.ScalarNode):
            try:
                builder.construct_object(node)
            except (ValueError, TypeError, AttributeError, KeyError):
                return node.start_mark.line + 1, node.start_mark.column + 1
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
    return (1, 1)


def _reader_mark(text: str, at: int) -> tuple[int, int]:
    """The line and column of a position in the text, counting lines as YAML does."""
    breaks = list(_LINE_BREAK.finditer(text, 0, at))
    start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, at - start + 1


def _yaml_hint(exc: yaml.MarkedYAMLError) -> str:
    """How to fix the YAML mistakes editors make most, where PyYAML's words do not say."""
    problem = str(exc.problem or "")
    if "'\\t'" in problem:
        return " (YAML indents with spaces, never tabs)"
    if "another document" in problem:
        return " (a file holds one document: take out the `---` line, or split the file)"
    return ""


def _walk(
    node: yaml.Node,
    path: Path_,
    marks: tuple[dict[Path_, tuple[int, int]], dict[Path_, tuple[int, int]]],
    problems: list[Problem],
    name: str,
    visited: list[int],
) -> None:
    visited[0] += 1
    if visited[0] > _MAX_NODES:
        if visited[0] == _MAX_NODES + 1:
            problems.append(Problem(name, 1, 1, "document too large (too many nodes or aliases)"))
        return
    values, keys = marks
    values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                problems.append(Problem(name, *where, f"duplicate key {key!r}"))
            seen.add(key)
            keys[(*path, key)] = where
            _walk(value_node, (*path, key), marks, problems, name, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), marks, problems, name, visited)


def validate(model: type[ModelT], doc: YamlDocument, *, data: Any = None) -> ModelT:
    """Build `model` from the document; raise `ProblemsError` pointing at every bad key."""
    try:
        return model.model_validate(doc.data if data is None else data)
    except pydantic.ValidationError as exc:
        raise ProblemsError(problems_from(model, doc, exc)) from None


def problems_from(
    model: type[pydantic.BaseModel], doc: YamlDocument, exc: pydantic.ValidationError
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc: Path_ = tuple(part for part in error["loc"] if isinstance(part, str | int))
        unknown_key = error["type"] == "extra_forbidden"
        problems.append(doc.problem(loc, _message(model, loc, error), key=unknown_key))
    return problems


def _message(model: type[pydantic.BaseModel], loc: Path_, error: Any) -> str:
    kind = error["type"]
    where = ".".join(str(p) for p in loc if isinstance(p, str)) or "document"
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        allowed = allowed_keys(model, loc[:-1])
        hint = did_you_mean(key, allowed)
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return f"missing required key {str(loc[-1])!r}" if loc else "missing required key"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "model_type" or kind == "dict_type":
        message = "expected a mapping of keys to values"
    if kind == "string_type" and isinstance(error.get("input"), bool):
        message += " (YAML reads on/off/yes/no/true/false as true or false: put it in quotes)"
    if kind == "less_than_equal" and error.get("ctx", {}).get("le") == 1 and _over(error, 1):
        message += f" (a share is a fraction: {_as_share(error['input'])})"
    return f"{where}: {message}" if loc else message


def _over(error: Any, limit: float) -> bool:
    value = error.get("input")
    return isinstance(value, int | float) and not isinstance(value, bool) and value > limit


def _as_share(value: float) -> str:
    return f"{value / 100:g} for {value:g}%" if value <= 100 else "between 0 and 1"


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if choices:
        return f"; expected one of: {', '.join(sorted(choices))}"
    return ""


def allowed_keys(model: type[pydantic.BaseModel], loc: Path_) -> list[str]:
    """The keys a mapping at `loc` inside `model` may have (empty if it is not a model)."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    target = _model_in(annotation)
    return list(target.model_fields) if target else []


def _step(annotation: Any, part: str | int) -> Any:
    if isinstance(part, int):
        for arg in typing.get_args(_strip_optional(annotation)) or ():
            if arg is not Ellipsis:
                return arg
        return None
    target = _model_in(annotation)
    if target is not None and part in target.model_fields:
        return target.model_fields[part].annotation
    args = typing.get_args(_strip_optional(annotation))
    if typing.get_origin(_strip_optional(annotation)) is dict and len(args) == 2:
        return args[1]
    return None


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [a for a in args if _model_in(a) is not None]
        return models[0] if models else args[0]
    return annotation


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None
