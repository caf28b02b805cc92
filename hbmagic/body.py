"""A ``%%hyperband`` cell body turned into a function, as DESIGN.md section 1 says.

The body becomes the body of a generated function whose globals are the
notebook's namespace and whose keyword-only parameters are the
hyperparameters plus ``budget``, ``trial``, ``report`` and ``device``. The value
of its last expression, if it is one, is returned. Names it assigns therefore
stay inside one evaluation, and closures and generator expressions work.

Line numbers are the cell's own: line 1 is the ``%%hyperband`` line, so a
syntax error or a traceback points at the line the user sees.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import linecache
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .space import Distribution, SpaceError, parse_header_lines

__all__ = ["RESERVED", "Body", "BodyError", "CellObjective", "compile_body", "split_header"]

# Names the body always receives besides the hyperparameters.
RESERVED = ("budget", "trial", "report", "device")

_FUNCTION_NAME = "<hyperband cell>"
_TYPE_PARAMS: dict[str, list] = {"type_params": []} if sys.version_info >= (3, 12) else {}


class BodyError(ValueError):
    """A cell body that cannot become a search: a syntax error, a ``global`` statement, a hidden name."""


def split_header(cell: str, first_line: int = 2) -> tuple[list[tuple[int, str]], str]:
    """Separate the ``#|`` lines right under the magic line from the body.

    Blank lines may stand between header lines; the first other line starts the
    body. Header lines are blanked in the returned body, so its line numbers
    still match the cell's.

    Args:
        cell: The cell's text after the magic line.
        first_line: The cell line number of ``cell``'s first line (the magic line is 1).

    Returns:
        ``[(line_number, "#| ...")]`` and the body text.
    """
    lines = cell.split("\n")
    header: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#|"):
            header.append((first_line + index, stripped))
            lines[index] = ""
        elif stripped:
            break
    return header, "\n".join(lines)


def parse_header(cell: str) -> tuple[dict[str, Distribution], str]:
    """The space of the ``#|`` lines and the body text (see ``split_header``)."""
    header, text = split_header(cell)
    return parse_header_lines(header), text


@dataclass(frozen=True)
class Body:
    """A compiled cell body.

    Attributes:
        function: The generated function; call it with keyword arguments only.
        names: The hyperparameters, in space order.
        filename: The name its code and tracebacks carry.
        source: The transformed body with the cell's line numbering (for tracebacks).
        key: The body's normalized AST as text: comments, blank lines and spacing do not change it.
    """

    function: Callable[..., Any]
    names: tuple[str, ...]
    filename: str
    source: str
    key: str

    def objective(self) -> CellObjective:
        """The objective ``tune`` calls: ``objective(trial)`` runs the body for that trial."""
        return CellObjective(self.function, self.names, self.filename, self.source)


@dataclass(frozen=True)
class CellObjective:
    """Runs the cell body for one trial. Picklable with cloudpickle, so it can run in another process."""

    function: Callable[..., Any]
    names: tuple[str, ...]
    filename: str
    source: str

    def __call__(self, trial: Any) -> Any:
        remember_source(self.filename, self.source)
        code = self.function.__code__
        if code.co_filename != self.filename:  # cloudpickle renames it "<dynamic-code>"
            self.function.__code__ = _renamed(code, self.filename)
        values = {name: trial.config[name] for name in self.names}
        return self.function(**values, budget=trial.budget, trial=trial, report=trial.report, device=trial.device)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def remember_source(filename: str, source: str) -> None:
    """Put ``source`` in ``linecache`` so tracebacks through the body show its lines."""
    if filename not in linecache.cache:
        lines = source.splitlines(keepends=True)
        linecache.cache[filename] = (len(source), None, lines, filename)


def check_names(names: Sequence[str], namespace: Mapping[str, Any]) -> None:
    """Refuse hyperparameter names that would hide what the body needs.

    A hyperparameter may shadow a notebook variable, but not ``budget``,
    ``trial``, ``report``, ``device``, a builtin or an imported module.

    Raises:
        SpaceError: Naming the hyperparameter and what it would hide.
    """
    for name in names:
        if name in RESERVED:
            raise SpaceError(
                f"hyperparameter {name!r} would hide the body's own {name!r}; "
                f"choose another name (reserved: {', '.join(RESERVED)})"
            )
        if name in vars(builtins):
            raise SpaceError(f"hyperparameter {name!r} would hide the builtin {name}(); choose another name")
        value = namespace.get(name)
        if isinstance(value, types.ModuleType):
            raise SpaceError(
                f"hyperparameter {name!r} would hide the imported module {value.__name__!r}; choose another name"
            )


def _syntax_message(err: SyntaxError, source_lines: list[str]) -> str:
    line = err.lineno or 0
    text = source_lines[line - 1] if 0 < line <= len(source_lines) else (err.text or "")
    text = text.rstrip("\n")
    shown = text.lstrip()
    message = f"syntax error in the cell body at line {line}: {err.msg}"
    if shown:
        caret = ""
        if err.offset:
            column = max(0, err.offset - 1 - (len(text) - len(shown)))
            caret = "\n    " + " " * column + "^"
        message += f"\n    {shown}{caret}"
    return message


class _Checker(ast.NodeVisitor):
    """Finds what the body may not contain: ``global`` anywhere, ``yield`` at its own level."""

    def __init__(self) -> None:
        self.depth = 0

    def visit_Global(self, node: ast.Global) -> None:
        names = ", ".join(node.names)
        raise BodyError(
            f"line {node.lineno}: 'global {names}' is not allowed in a %%hyperband body: names it assigns stay "
            "inside one evaluation; to keep something, return it, report it, or keep it in trial.state"
        )

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _nested  # noqa: N815

    def _yield(self, node: ast.Yield | ast.YieldFrom) -> None:
        if self.depth == 0:
            raise BodyError(
                f"line {node.lineno}: 'yield' is not allowed at the top of a %%hyperband body "
                "(it would make the body a generator); call report(...) for each step instead"
            )
        self.generic_visit(node)

    visit_Yield = visit_YieldFrom = _yield  # noqa: N815


def compile_body(
    body: str,
    names: Sequence[str],
    namespace: dict[str, Any],
    transform: Callable[[str], str] | None = None,
    first_line: int = 2,
) -> Body:
    """Compile a cell body into a function over ``names`` and the reserved names.

    Args:
        body: The body text (header lines may be blank or ``#|`` comments).
        names: The hyperparameters.
        namespace: The globals the body reads: the notebook's namespace.
        transform: IPython's ``shell.transform_cell`` (``%magics``, ``!shell`` lines), if any.
        first_line: The cell line number of ``body``'s first line.

    Raises:
        SpaceError: A name would hide something the body needs.
        BodyError: A syntax error (with the cell's line numbers), ``global``, or ``yield``.
    """
    check_names(names, namespace)
    lines = body.split("\n")
    skipped = 0
    while skipped < len(lines) and not lines[skipped].strip():
        skipped += 1
    text = "\n".join(lines[skipped:])
    if transform is not None and text.strip():
        text = transform(text)
    source = "\n" * (first_line - 1 + skipped) + text
    source_lines = source.splitlines()
    digest = hashlib.blake2b(source.encode(), digest_size=6).hexdigest()
    filename = f"<hyperband cell {digest}>"
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as err:
        raise BodyError(_syntax_message(err, source_lines)) from None
    _Checker().visit(tree)
    key = ast.dump(tree, annotate_fields=False, include_attributes=False)
    statements: list[ast.stmt] = list(tree.body)
    if statements and isinstance(statements[-1], ast.Expr):
        last = statements[-1]
        statements[-1] = ast.copy_location(ast.Return(value=last.value), last)
    if not statements:
        statements = [ast.Pass(lineno=first_line, col_offset=0, end_lineno=first_line, end_col_offset=0)]
    parameters = [ast.arg(arg=name) for name in (*names, *RESERVED)]
    function = ast.FunctionDef(
        name=_FUNCTION_NAME,
        args=ast.arguments(
            posonlyargs=[],
            args=[],
            vararg=None,
            kwonlyargs=parameters,
            kw_defaults=[None] * len(parameters),
            kwarg=None,
            defaults=[],
        ),
        body=statements,
        decorator_list=[],
        returns=None,
        type_comment=None,
        lineno=statements[0].lineno,
        col_offset=0,
        end_lineno=statements[-1].end_lineno,
        end_col_offset=statements[-1].end_col_offset,
        **_TYPE_PARAMS,
    )
    module = ast.Module(body=[function], type_ignores=[])
    ast.fix_missing_locations(module)
    try:
        code = compile(module, filename, "exec", dont_inherit=True)
    except SyntaxError as err:  # errors found after parsing, such as 'nonlocal' or 'return' misuse
        raise BodyError(_syntax_message(err, source_lines)) from None
    remember_source(filename, source)
    scope: dict[str, Any] = {}
    exec(code, namespace, scope)  # defines the function only; its globals are the notebook's namespace
    return Body(scope[_FUNCTION_NAME], tuple(names), filename, source, key)
