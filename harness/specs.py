"""Specs: frozen pydantic models validated from plain mappings, whatever they were read from (a YAML file, a command
line, a run folder's resolved_config.yaml), through one path: `validate`. A refusal is a ConfigError of one line
that names where the value came from (FILE:LINE, or the option), the field, what is wrong and what is valid."""

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.errors import ConfigError


class Spec(BaseModel):
    """A frozen spec: unknown fields are refused with the list of known ones; numbers must be finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    unknown_field: ClassVar[str] = "unknown field"

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data):
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError("unknown_field", cls.unknown_field,
                                              {"at": (key,), "hint": f"allowed: {', '.join(sorted(cls.model_fields))}"})
        return data


def refuse(message: str, at: tuple = (), hint: str = "") -> PydanticCustomError:
    """An error for a validator to raise: `at` is the failing field's path below the model being validated."""
    return PydanticCustomError("refused", message.replace("{", "{{").replace("}", "}}"), {"at": at, "hint": hint})


def _one_or_more(value):
    return [value] if isinstance(value, str) else value


PositiveInt = Annotated[int, Strict(), Field(ge=1)]
Count = Annotated[int, Strict(), Field(ge=0)]
PositiveNumber = Annotated[float, Strict(), Field(gt=0)]
Number = Annotated[float, Strict(), Field(ge=0)]
Text = Annotated[str, Strict()]
Name = Annotated[str, Strict(), Field(min_length=1)]
Label = Annotated[str, Strict(), Field(pattern=r"\S")]  # a text with something in it besides blanks
# A list of names; one name alone stands for a list of one.
Names = Annotated[tuple[Name, ...], BeforeValidator(_one_or_more), Field(min_length=1)]


@functools.cache
def _adapter(kind) -> TypeAdapter:
    return TypeAdapter(kind)


def validate(kind, data: Any, origin: str, line_of: Callable[[tuple], int | None] | None = None,
             options: dict[str, str] | None = None, context: dict | None = None):
    """`data` as a `kind` (a Spec class, or a TypeAdapter of another type such as a union of them), or a ConfigError
    naming `origin` (a file, with the line `line_of` gives a field's path; or a command, with `options` naming the
    option each dotted field path came from)."""
    try:
        adapter = kind if isinstance(kind, TypeAdapter) else _adapter(kind)
        return adapter.validate_python(data, context=context)
    except ValidationError as exc:
        path, reason, hint = describe(exc.errors()[0], data)
        # The option that set the field, or the nearest of its parents (`--rate` for rates.1).
        prefixes = (".".join(str(p) for p in path[:k]) for k in range(len(path), 0, -1))
        option = next((options[f] for f in prefixes if f in (options or {})), None)
        if option:
            raise ConfigError(f"{option}: {reason}", hint) from None
        line = line_of(path) if line_of else None
        field = ".".join(str(p) if str(p).isprintable() else repr(p) for p in path) or "(top level)"
        raise ConfigError(f"{origin}{f':{line}' if line else ''}: {field}: {reason}", hint) from None


def _data_path(loc: tuple, data: Any) -> tuple:
    """The steps of pydantic's error location that exist in `data` (union tags and validator names do not)."""
    path, node = [], data
    for step in loc:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, (list, tuple)) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            continue
        path.append(step)
    return tuple(path)


def describe(error: dict, data: Any) -> tuple[tuple, str, str]:
    """A pydantic error as (field path in `data`, reason, hint)."""
    ctx = error.get("ctx") or {}
    kind, value = error["type"], error.get("input")
    path = _data_path(error["loc"], data)
    if kind == "missing":
        return path, f"missing required field '{error['loc'][-1]}'", ""
    if kind in ("unknown_field", "refused"):
        return path + tuple(ctx.get("at", ())), error["msg"], ctx.get("hint", "")
    if kind == "union_tag_invalid":  # the one tagged union: scenarios, by name
        known = ", ".join(_literals(ctx["expected_tags"]))
        return (*path, "name"), f"unknown scenario {ctx['tag']!r}", f"known: {known}"
    if kind == "union_tag_not_found":
        return path, "each scenario is a mapping with a 'name'", ""
    return path, f"{_reason(kind, ctx, value, error['msg'])}, got {value!r}", ""


BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le")}


# pydantic's error types, each as the reason bench gives.
REASONS = {"too_short": "must be a non-empty list", "int_type": "must be an integer",
           "int_from_float": "must be an integer", "int_parsing": "must be an integer",
           "float_type": "must be a number", "float_parsing": "must be a number",
           "finite_number": "must be a finite number", "string_too_short": "must be a non-empty string",
           "string_pattern_mismatch": "must be a non-empty string", "string_type": "must be a string",
           "tuple_type": "must be a list", "list_type": "must be a list", "model_type": "must be a mapping",
           "model_attributes_type": "must be a mapping", "dict_type": "must be a mapping"}


def _reason(kind: str, ctx: dict, value, message: str) -> str:
    if kind in BOUNDS:
        sign, key = BOUNDS[kind]
        bound = ctx[key]
        return f"must be {'an integer' if isinstance(bound, int) else 'a number'} {sign} {bound:g}"
    if kind == "literal_error":
        return f"must be one of {', '.join(_literals(ctx['expected']))}"
    return REASONS.get(kind) or message.removeprefix("Value error, ").replace("Input should be", "must be")


def _literals(expected: str) -> list[str]:
    """pydantic's "'a', 'b' or 'c'" as [a, b, c]."""
    return [quoted or bare for quoted, bare in re.findall(r"'([^']*)'|\b(True|False|\d+)\b", expected)]
