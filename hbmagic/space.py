"""The search space: distributions, their header text, and seeded sampling.

A space maps names to distributions. It is written as objects
(``loguniform(1e-3, 1e-1)``) or as header text, either ``#| name: dist(...)``
lines or ``name=dist(...)`` tokens. Text is parsed as literals with ``ast``
and never evaluated.

Sampling is a pure function of the search seed and a trial's ordinal number,
so the configuration a trial gets never depends on the order in which workers
ask. A space made only of finite dimensions is enumerated through a seeded
permutation, so configurations do not repeat until the space is exhausted.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import keyword
import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

__all__ = [
    "Choice",
    "Constant",
    "Distribution",
    "LogRandInt",
    "LogUniform",
    "QUniform",
    "RandInt",
    "Space",
    "SpaceError",
    "Uniform",
    "choice",
    "derive_seed",
    "lograndint",
    "loguniform",
    "parse_distribution",
    "parse_header_lines",
    "quniform",
    "randint",
    "split_magic_line",
    "uniform",
]

Value = int | float | str | bool | None


class SpaceError(ValueError):
    """A search-space entry that cannot be used; the message says what and where."""


def derive_seed(*parts: object) -> int:
    """A 63-bit integer determined only by ``parts`` (stable across runs and machines)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _check_number(dist: str, what: str, value: object, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"{dist}: {what} is {value!r}, but must be {kind}")
    if integer and not isinstance(value, int):
        raise SpaceError(f"{dist}: {what} is {value!r}, but must be {kind} (integer dimensions take integer bounds)")
    if not math.isfinite(value):
        raise SpaceError(f"{dist}: {what} is {value!r}, but must be finite")


class Distribution:
    """One dimension of a space. ``size`` is the number of values, None when infinite."""

    name: ClassVar[str]
    size: int | None

    def sample(self, rng: random.Random) -> Value:
        raise NotImplementedError

    def value_at(self, index: int) -> Value:
        """The ``index``-th value of a finite dimension (0 <= index < size)."""
        raise NotImplementedError

    def _args(self) -> tuple:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"{self.name}({', '.join(repr(a) for a in self._args())})"


@dataclass(frozen=True, repr=False)
class Uniform(Distribution):
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float
    name: ClassVar[str] = "uniform"
    size: ClassVar[None] = None

    def __post_init__(self) -> None:
        _check_number(self.name, "low", self.low)
        _check_number(self.name, "high", self.high)
        if not self.low < self.high:
            raise SpaceError(f"{self.name}: low is {self.low!r} and high is {self.high!r}, but must be low < high")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def _args(self) -> tuple:
        return (self.low, self.high)

    __repr__ = Distribution.__str__


@dataclass(frozen=True, repr=False)
class LogUniform(Uniform):
    """A float whose logarithm is uniform on ``[log low, log high]``; ``0 < low < high``."""

    name: ClassVar[str] = "loguniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low <= 0:
            raise SpaceError(f"{self.name}: low is {self.low!r}, but must be > 0")

    def sample(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


@dataclass(frozen=True, repr=False)
class RandInt(Distribution):
    """An integer drawn uniformly from ``low..high``, both ends included."""

    low: int
    high: int
    name: ClassVar[str] = "randint"

    def __post_init__(self) -> None:
        _check_number(self.name, "low", self.low, integer=True)
        _check_number(self.name, "high", self.high, integer=True)
        if not self.low <= self.high:
            raise SpaceError(f"{self.name}: low is {self.low} and high is {self.high}, but must be low <= high")

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.high - self.low + 1

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def value_at(self, index: int) -> int:
        return self.low + index

    def _args(self) -> tuple:
        return (self.low, self.high)

    __repr__ = Distribution.__str__


@dataclass(frozen=True, repr=False)
class LogRandInt(RandInt):
    """An integer in ``low..high`` whose logarithm is roughly uniform; ``1 <= low``."""

    name: ClassVar[str] = "lograndint"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low < 1:
            raise SpaceError(f"{self.name}: low is {self.low}, but must be >= 1")

    def sample(self, rng: random.Random) -> int:
        # Uniform in log space over [low, high + 1) and floored, so each end keeps its share.
        x = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
        return min(self.high, max(self.low, math.floor(x)))

    def value_at(self, index: int) -> int:
        raise SpaceError("lograndint is not enumerated")


@dataclass(frozen=True, repr=False)
class QUniform(Distribution):
    """A multiple of ``q`` drawn uniformly from those in ``[low, high]``."""

    low: float
    high: float
    q: float
    name: ClassVar[str] = "quniform"

    def __post_init__(self) -> None:
        for what in ("low", "high", "q"):
            _check_number(self.name, what, getattr(self, what))
        if not self.low < self.high:
            raise SpaceError(f"{self.name}: low is {self.low!r} and high is {self.high!r}, but must be low < high")
        if self.q <= 0:
            raise SpaceError(f"{self.name}: q is {self.q!r}, but must be > 0")
        if self.size < 1:
            raise SpaceError(f"{self.name}: no multiple of q={self.q!r} lies in [{self.low!r}, {self.high!r}]")

    @property
    def _grid(self) -> tuple[int, int, Decimal]:
        q = Decimal(repr(self.q))
        first = math.ceil(Decimal(repr(self.low)) / q)
        last = math.floor(Decimal(repr(self.high)) / q)
        return first, last, q

    @property
    def size(self) -> int:  # type: ignore[override]
        first, last, _ = self._grid
        return last - first + 1

    def value_at(self, index: int) -> int | float:
        first, _, q = self._grid
        value = (first + index) * q
        if isinstance(self.q, int) and isinstance(self.low, int):
            return int(value)
        return float(value)

    def sample(self, rng: random.Random) -> int | float:
        return self.value_at(rng.randrange(self.size))

    def _args(self) -> tuple:
        return (self.low, self.high, self.q)

    __repr__ = Distribution.__str__


_CHOICE_TYPES = (int, float, str, bool, type(None))


@dataclass(frozen=True, repr=False)
class Choice(Distribution):
    """One of the listed values (numbers, strings, booleans, None), each equally likely."""

    values: tuple
    name: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        if not self.values:
            raise SpaceError("choice: needs at least one value, as in choice(16, 32, 64)")
        seen: list[tuple[type, Value]] = []
        for value in self.values:
            if not isinstance(value, _CHOICE_TYPES):
                raise SpaceError(
                    f"choice: value {value!r} is a {type(value).__name__}, "
                    "but values must be numbers, strings, booleans or None"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise SpaceError(f"choice: value {value!r} must be finite")
            key = (type(value), value)
            if key in seen:
                raise SpaceError(f"choice: value {value!r} is listed twice")
            seen.append(key)

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.values)

    def sample(self, rng: random.Random) -> Value:
        return self.values[rng.randrange(len(self.values))]

    def value_at(self, index: int) -> Value:
        return self.values[index]

    def _args(self) -> tuple:
        return self.values

    __repr__ = Distribution.__str__


@dataclass(frozen=True, repr=False)
class Constant(Distribution):
    """A fixed value."""

    value: Any
    name: ClassVar[str] = "constant"
    size: ClassVar[int] = 1

    def sample(self, rng: random.Random) -> Any:
        return self.value

    def value_at(self, index: int) -> Any:
        return self.value

    def __str__(self) -> str:
        return repr(self.value)

    __repr__ = __str__


def uniform(low: float, high: float) -> Uniform:
    """A float uniform on ``[low, high]``."""
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    """A float log-uniform on ``[low, high]``, ``0 < low < high``."""
    return LogUniform(low, high)


def randint(low: int, high: int) -> RandInt:
    """An integer uniform on ``low..high``, both ends included."""
    return RandInt(low, high)


def lograndint(low: int, high: int) -> LogRandInt:
    """An integer log-uniform on ``low..high``, both ends included, ``1 <= low``."""
    return LogRandInt(low, high)


def quniform(low: float, high: float, q: float) -> QUniform:
    """A multiple of ``q`` uniform among those in ``[low, high]``."""
    return QUniform(low, high, q)


def choice(*values: Value) -> Choice:
    """One of ``values`` (numbers, strings, booleans, None)."""
    return Choice(tuple(values))


_FACTORIES: dict[str, tuple[type[Distribution], tuple[str, ...]]] = {
    "uniform": (Uniform, ("low", "high")),
    "loguniform": (LogUniform, ("low", "high")),
    "randint": (RandInt, ("low", "high")),
    "lograndint": (LogRandInt, ("low", "high")),
    "quniform": (QUniform, ("low", "high", "q")),
    "choice": (Choice, ()),
}

_ALLOWED = "uniform(a, b), loguniform(a, b), randint(a, b), lograndint(a, b), quniform(a, b, q), choice(v1, v2, ...)"


def _literal(node: ast.expr, where: str, dist: str) -> Value:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as err:
        text = ast.unparse(node) if hasattr(ast, "unparse") else "?"
        raise SpaceError(
            f"{where}: {dist}: argument {text!r} is not a literal "
            "(header values are numbers, strings, booleans or None, never evaluated)"
        ) from err


def parse_distribution(text: str, where: str = "search space") -> Distribution:
    """Parse ``text`` such as ``"loguniform(1e-3, 1e-1)"`` or ``"'relu'"`` into a distribution.

    Args:
        text: The distribution as written in a header.
        where: Where the text stands, for error messages ("line 3").

    Raises:
        SpaceError: The text is not a known distribution with valid literal arguments.
    """
    source = text.strip()
    if not source:
        raise SpaceError(f"{where}: the distribution is missing; allowed: {_ALLOWED}, or a literal constant")
    try:
        node = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as err:
        raise SpaceError(
            f"{where}: {source!r} is not valid syntax; allowed: {_ALLOWED}, or a literal constant"
        ) from err
    try:
        if isinstance(node, ast.Call):
            return _parse_call(node, source, where)
        return Constant(_literal(node, where, "constant"))
    except RecursionError as err:
        raise SpaceError(f"{where}: {source[:40]!r} is nested too deeply") from err


def _parse_call(node: ast.Call, source: str, where: str) -> Distribution:
    if not isinstance(node.func, ast.Name):
        raise SpaceError(f"{where}: {source!r} does not name a distribution; allowed: {_ALLOWED}")
    name = node.func.id
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name.lower(), _FACTORIES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpaceError(f"{where}: unknown distribution {name!r}{hint} Allowed: {_ALLOWED}")
    cls, params = _FACTORIES[name]
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(kw.arg is None for kw in node.keywords):
        raise SpaceError(f"{where}: {name}: * and ** arguments are not allowed in a header")
    args = [_literal(arg, where, name) for arg in node.args]
    if cls is Choice:
        if node.keywords:
            raise SpaceError(f"{where}: choice takes values only, as in choice(16, 32), not keywords")
        return _build(where, lambda: Choice(tuple(args)))
    kwargs: dict[str, Value] = {}
    for kw in node.keywords:
        if kw.arg not in params:
            raise SpaceError(f"{where}: {name} has no argument {kw.arg!r}; it takes {', '.join(params)}")
        kwargs[kw.arg] = _literal(kw.value, where, name)
    given = dict(zip(params, args, strict=False)) | kwargs
    if len(args) > len(params) or len(given) != len(params) or len(args) + len(kwargs) != len(params):
        count = len(args) + len(kwargs)
        raise SpaceError(f"{where}: {name} takes {len(params)} arguments ({', '.join(params)}), but {count} were given")
    return _build(where, lambda: cls(**given))


def _build(where: str, make: Any) -> Distribution:
    try:
        return make()
    except SpaceError as err:
        raise SpaceError(f"{where}: {err}") from None
    except TypeError as err:  # unhashable values and the like
        raise SpaceError(f"{where}: {err}") from None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(name: str, where: str) -> str:
    """Return ``name`` if it can name a hyperparameter, else raise SpaceError."""
    if not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise SpaceError(f"{where}: {name!r} is not a valid name; a hyperparameter name is a Python identifier")
    return name


_HEADER_LINE = re.compile(r"#\|\s*(?P<name>[^:]*?)\s*:(?P<dist>.*)\Z", re.S)


def parse_header_lines(lines: Iterable[tuple[int, str]]) -> dict[str, Distribution]:
    """Parse ``(line_number, "#| name: dist(...)")`` pairs into a mapping.

    Raises:
        SpaceError: A line is malformed, a name is invalid or repeated, or a distribution is bad.
    """
    entries: list[tuple[str, str, str]] = []
    for number, line in lines:
        where = f"line {number}"
        match = _HEADER_LINE.match(line.strip())
        if match is None:
            raise SpaceError(f"{where}: {line.strip()!r} is not a search-space line; write '#| name: distribution'")
        entries.append((match["name"], match["dist"], where))
    return _collect(entries)


def _collect(entries: Iterable[tuple[str, str, str]], into: dict[str, Distribution] | None = None) -> dict:
    space = {} if into is None else into
    for name, text, where in entries:
        check_name(name, where)
        if name in space:
            raise SpaceError(f"{where}: {name!r} is defined twice in the search space")
        space[name] = parse_distribution(text, f"{where}: {name}")
    return space


def split_magic_line(line: str) -> tuple[list[str], dict[str, Distribution]]:
    """Split a magic line into option tokens and ``name=dist(...)`` space entries.

    Whitespace inside parentheses, brackets and quotes does not split a token.

    Raises:
        SpaceError: Unbalanced parentheses or quotes, or a bad space entry.
    """
    tokens = _tokens(line)
    options: list[str] = []
    entries: list[tuple[str, str, str]] = []
    for token in tokens:
        if not token.startswith("-") and "=" in token:
            name, _, text = token.partition("=")
            entries.append((name.strip(), text, "magic line"))
        else:
            options.append(token)
    return options, _collect(entries)


def _tokens(line: str) -> list[str]:
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    for char in line:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char in "([{":
            depth += 1
            current.append(char)
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise SpaceError(f"magic line: unbalanced {char!r} in {''.join(current) + char!r}")
            current.append(char)
        elif char.isspace() and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(char)
    if quote or depth:
        what = f"quote {quote}" if quote else "parenthesis"
        raise SpaceError(f"magic line: unclosed {what} in {''.join(current)!r}")
    if current:
        tokens.append("".join(current))
    return tokens


def _permute(index: int, size: int, key: int) -> int:
    """A seeded bijection of ``range(size)``: a Feistel network with cycle walking."""
    if size <= 1:
        return 0
    half = max(1, ((size - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    value = index
    while True:
        left, right = value >> half, value & mask
        for round_ in range(4):
            left, right = right, left ^ (derive_seed(key, round_, right) & mask)
        value = (left << half) | right
        if value < size:
            return value


class Space:
    """An ordered mapping of hyperparameter names to distributions.

    Args:
        entries: Each name mapped to a Distribution, a header text such as
            ``"loguniform(1e-3, 1e-1)"``, or any other value as a constant.
    """

    def __init__(self, entries: Mapping[str, Any]):
        if isinstance(entries, Space):
            entries = entries.dims
        if not isinstance(entries, Mapping):
            raise SpaceError(
                f"the search space must be a mapping of names to distributions, not {type(entries).__name__}"
            )
        dims: dict[str, Distribution] = {}
        for name, value in entries.items():
            if not isinstance(name, str):
                raise SpaceError(f"search space: name {name!r} must be a string")
            check_name(name, "search space")
            if isinstance(value, Distribution):
                dims[name] = value
            elif isinstance(value, str):
                dims[name] = parse_distribution(value, f"search space: {name}")
            else:
                dims[name] = Constant(value)
        self.dims = dims

    @property
    def size(self) -> int | None:
        """How many distinct configurations the space holds, None if infinitely many."""
        total = 1
        for dist in self.dims.values():
            if dist.size is None or isinstance(dist, LogRandInt):
                return None
            total *= dist.size
        return total

    def config(self, seed: int, ordinal: int) -> dict[str, Value]:
        """The configuration of trial number ``ordinal`` under ``seed``.

        A finite space is enumerated without replacement: ordinals ``0..size-1``
        get distinct configurations, and the next ``size`` ordinals a fresh
        permutation, and so on.
        """
        size = self.size
        if size is None:
            rng = random.Random(derive_seed(seed, "config", ordinal))
            return {name: dist.sample(rng) for name, dist in self.dims.items()}
        index = _permute(ordinal % size, size, derive_seed(seed, "permutation", ordinal // size))
        config: dict[str, Value] = {}
        for name, dist in reversed(self.dims.items()):
            index, digit = divmod(index, dist.size)  # type: ignore[arg-type]
            config[name] = dist.value_at(digit)
        return dict(reversed(config.items()))

    def to_text(self) -> dict[str, str]:
        """Each name mapped to its header text (stable, used in the study key)."""
        return {name: str(dist) for name, dist in self.dims.items()}

    def __len__(self) -> int:
        return len(self.dims)

    def __repr__(self) -> str:
        return "Space(" + ", ".join(f"{n}={d}" for n, d in self.dims.items()) + ")"
