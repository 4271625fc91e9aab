"""Typed job configs: one frozen dataclass per job kind, the single definition of its parameters.

A job config (:class:`JobConfig` subclass) declares each parameter once with :func:`param`: its
default, a help text, and optionally a unit, choices and a range. Everything else derives from
that declaration:

* the ``ranklab`` command's flags (:meth:`JobConfig.add_arguments`, :meth:`JobConfig.from_args`):
  ``--name-with-dashes``, the type from the annotation, defaults and units shown in ``--help``;
* the sweep's parameter check (:meth:`JobConfig.from_params`: an unknown key or a value of the
  wrong type fails before anything runs, naming the key and what is allowed);
* the job id (:meth:`JobConfig.job_id`, a hash of every resolved parameter);
* the "reproduce with" command (:meth:`JobConfig.command`, the non-default flags).

Supported annotations: ``int``, ``float``, ``str``, ``bool`` (``--x/--no-x``), ``X | None``
(``None`` = "not set", the help says what that means) and ``tuple[X, ...]`` (several values after
one flag). A field with ``cli=False`` (e.g. a nested dict) is available to sweeps and Python only.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import types
import typing
from typing import Any, ClassVar

from rankers.cache import fingerprint

__all__ = ["ConfigError", "JobConfig", "param", "fingerprint", "HelpFormatter"]


class ConfigError(ValueError):
    """A parameter is unknown or has a bad value; the message names it and says what is allowed."""


def param(default: Any, help: str, *, unit: str | None = None, choices=None, min=None, max=None,
          gt=None, flag: str | None = None, cli: bool = True, metavar: str | None = None) -> Any:
    """Declare a config field. ``min``/``max`` are inclusive bounds, ``gt`` an exclusive lower one;
    ``choices`` the allowed values; ``flag`` overrides the derived ``--name``; ``unit`` is shown in
    the help (e.g. ``"documents"``, ``"fraction of words, 0-1"``)."""
    meta = {"help": help, "unit": unit, "choices": tuple(choices) if choices else None, "min": min,
            "max": max, "gt": gt, "flag": flag, "cli": cli, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (or None) as default: configs are immutable")
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp) -> tuple[type, bool, bool]:
    """``(element type, optional, is_tuple)`` of a supported annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            return object, optional, False
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin is tuple:
        return typing.get_args(tp)[0], optional, True
    if tp in (int, float, str, bool):
        return tp, optional, False
    return object, optional, False


def _coerce(name: str, value: Any, tp: type, optional: bool, is_tuple: bool):
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} may not be empty (null)")
    if is_tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value] if not isinstance(value, str) or tp is str else value.split()
        return tuple(_coerce(f"{name}[{i}]", v, tp, False, False) for i, v in enumerate(value))
    if tp is object:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default in ``--help`` (not for flags whose default is "not given") and keeps
    the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Base of the job configs. Subclasses are frozen dataclasses whose fields use :func:`param`.

    ``kind`` is the job kind (``ranklab.jobs.KINDS``) and the ``ranklab`` sub-command that runs it.
    """

    kind: ClassVar[str] = ""

    # -- construction and validation ------------------------------------------------------------
    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            tp, optional, is_tuple = _base_type(hints[f.name])
            value = _coerce(self.label(f.name), getattr(self, f.name), tp, optional, is_tuple)
            object.__setattr__(self, f.name, value)
            if value is not None:
                self._check_field(f, value)
        self.check()

    def _check_field(self, f: dataclasses.Field, value) -> None:
        m = f.metadata
        label = self.label(f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if m.get("choices") and v not in m["choices"]:
                raise ConfigError(f"{label}: unknown value {v!r}; use one of {list(m['choices'])}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{label} must be a finite number, got {v!r}")
            if m.get("min") is not None and isinstance(v, (int, float)) and v < m["min"]:
                raise ConfigError(f"{label} must be >= {m['min']}, got {v!r}")
            if m.get("max") is not None and isinstance(v, (int, float)) and v > m["max"]:
                raise ConfigError(f"{label} must be <= {m['max']}, got {v!r}")
            if m.get("gt") is not None and isinstance(v, (int, float)) and not v > m["gt"]:
                raise ConfigError(f"{label} must be > {m['gt']}, got {v!r}")

    def check(self) -> None:
        """Checks across fields (subclasses); raise :class:`ConfigError` naming the parameters."""

    @classmethod
    def flag(cls, name: str) -> str:
        f = cls.field(name)
        return f.metadata.get("flag") or "--" + name.replace("_", "-")

    @classmethod
    def label(cls, name: str) -> str:
        """``name (--flag)``: how errors name a parameter, for sweeps and the CLI alike."""
        f = cls.field(name)
        return f"{name} ({cls.flag(name)})" if f.metadata.get("cli", True) else name

    @classmethod
    def field(cls, name: str) -> dataclasses.Field:
        return {f.name: f for f in dataclasses.fields(cls)}[name]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_params(cls, params: dict | None = None, where: str = "", **overrides):
        """Build from a plain dict (sweep params, Python keywords); unknown keys fail by name."""
        params = {**(params or {}), **overrides}
        allowed = cls.names()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            pre = f"{where}: " if where else ""
            raise ConfigError(f"{pre}unknown parameter {unknown[0]!r} for {cls.kind or cls.__name__}; "
                              f"allowed: {allowed}")
        try:
            return cls(**params)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}" if where else str(e)) from None

    def to_params(self) -> dict:
        """Every parameter as a JSON-able dict (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def changed(self) -> dict:
        """The parameters that differ from their defaults."""
        return {f.name: v for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) != f.default}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def job_id(self, extra: dict | None = None) -> str:
        """12 hex digits identifying the resolved job (kind, every parameter, ``extra``)."""
        return fingerprint({"kind": self.kind, **self.to_params(), **(extra or {})}, 12)

    # -- command line ---------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
        """Add one flag per CLI field of the config to ``parser`` (defaults from the config)."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            if not m.get("cli", True) or f.name in exclude:
                continue
            tp, optional, is_tuple = _base_type(hints[f.name])
            help_ = m.get("help", "")
            if m.get("unit"):
                help_ += f" [{m['unit']}]"
            kw: dict[str, Any] = {"dest": f.name, "help": help_, "default": f.default}
            if tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = _arg_type(tp)
                if is_tuple:
                    kw["nargs"] = "+"
                if m.get("choices"):
                    kw["choices"] = m["choices"]
                if m.get("metavar"):
                    kw["metavar"] = m["metavar"]
            parser.add_argument(cls.flag(f.name), **kw)

    @classmethod
    def from_args(cls, ns: argparse.Namespace, **overrides):
        """The config from parsed arguments (fields without a flag keep their defaults)."""
        values = {n: getattr(ns, n) for n in cls.names() if hasattr(ns, n)}
        return cls.from_params(values, **overrides)

    def command(self) -> str:
        """The ``ranklab`` command line that reproduces this config (non-default flags only)."""
        parts = ["ranklab", self.kind]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v == f.default or not f.metadata.get("cli", True):
                continue
            flag = self.flag(f.name)
            if isinstance(v, bool):
                parts.append(flag if v else "--no-" + flag[2:])
            elif v is None:
                continue  # a None that differs from the default has no flag spelling
            elif isinstance(v, tuple):
                parts += [flag, *(shlex.quote(str(x)) for x in v)]
            else:
                parts += [flag, shlex.quote(str(v))]
        return " ".join(parts)


def _arg_type(tp: type):
    if tp is int:
        return int
    if tp is float:
        return float
    return str


@dataclasses.dataclass(frozen=True)
class RankingConfig(JobConfig):
    """What every job shares: a ranker, a collection, its first-stage candidate lists, a seed."""

    ranker: str = param("minilm", "ranker spec: minilm | bm25 | term-weight | bi-encoder:PATH | "
                        "cross-encoder:PATH | a model folder")
    dataset: str = param("demo", "collection: demo | a BEIR folder | irds:ID")
    first_stage: str = param("bm25", "first stage: bm25 or the name of a run shipped with the "
                             "dataset")
    k: int = param(100, "first-stage candidates per query (the list length)", unit="documents",
                   min=1)
    queries: int | None = param(None, "use a seeded sample of this many queries (all when not "
                                "given)", unit="queries", min=1)
    seed: int = param(0, "seeds every random choice (query sample, targets, draws)", min=0)
    dtype: str = param("fp32", "encoder precision of transformer rankers", choices=("fp32", "bf16"))

    def ranker_kwargs(self) -> dict:
        return {} if self.dtype == "fp32" else {"dtype": self.dtype}
