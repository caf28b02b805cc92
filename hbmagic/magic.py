"""The ``%%hyperband`` cell magic and the ``%hyperband`` line magic: a thin layer over the engine.

The magic reads its options (IPython's ``magic_arguments``) and the search
space (``name=dist(...)`` on the magic line, ``#| name: dist(...)`` lines under
it), turns the body into a function (``hbmagic.body``), and hands both to
``hbmagic.tune.Search``, what ``run_search`` and ``tune`` run: the study is
opened and checked before anything is shown, then come the first line ("new
study" or "resuming: ..."), the live view, and the summary. Every mistake in
what the user wrote becomes a ``UsageError``, shown without a traceback, and
nothing runs.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import keyword
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, argument_group, magic_arguments

from .body import BodyError, compile_body, parse_header
from .errors import USER_ERRORS, SearchFailed
from .events import EndReason
from .options import Options
from .plan import make_plan
from .space import Distribution, SpaceError, split_magic_line

__all__ = ["HyperbandMagics", "load_ipython_extension", "unload_ipython_extension"]


def _number(text: str) -> int | float:
    """``27`` as an int, ``0.5`` or ``1e3`` as a float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (such as 27 or 0.5)") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (such as 3)") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (such as 60 or 0.5)") from None


_PLAN_ARGUMENTS = [
    argument_group("Plan"),
    argument("--max-budget", type=_number, metavar="R", help="the resource a trial reaches at most (epochs), R"),
    argument("--min-budget", type=_number, default=1, metavar="r", help="the smallest resource a trial gets (1)"),
    argument("--eta", type=_integer, metavar="E", help="keep 1/E at each rung (3; 2 with --total-budget)"),
    argument("--algorithm", choices=("hyperband", "sh", "asha"), default="hyperband", help="(hyperband)"),
    argument(
        "--convention",
        choices=("alg1", "table"),
        default="alg1",
        help="Algorithm 1's bracket sizes, or the paper's printed table (alg1)",
    ),
    argument("--brackets", type=_integer, metavar="N", help="only the N most aggressive brackets (1: sh)"),
    argument("--total-budget", type=_number, metavar="B", help="successive halving with a fixed total budget B"),
    argument("--n-configs", type=_integer, metavar="N", help="configurations for --total-budget"),
    argument("--iterations", type=_integer, default=1, metavar="K", help="repeat the Hyperband outer loop (1)"),
    argument("--max-trials", type=_integer, metavar="N", help="stop after N trials (asha needs it or --time-limit)"),
]

_SEARCH_ARGUMENTS = [
    argument_group("Search"),
    argument("--time-limit", type=_seconds, metavar="S", help="start no evaluation after S seconds"),
    argument("--metric", metavar="NAME", help="the reported metric to optimize (needed when several are reported)"),
    argument("--mode", choices=("min", "max"), default="min", help="(min)"),
    argument("--seed", type=_integer, metavar="S", help="all sampling derives from it (random by default)"),
    argument("--max-failures", type=_integer, metavar="N", help="stop after N failed evaluations"),
    argument("--trial-timeout", type=_seconds, metavar="S", help="fail an evaluation that runs longer than S seconds"),
    argument_group("Where trials run"),
    argument("--executor", choices=("inline", "threads", "processes", "dask"), help="(threads with GPUs, else inline)"),
    argument("--workers", type=_integer, metavar="N", help="slots when no GPU is used"),
    argument("--devices", metavar="LIST", help="devices to use, such as 0,1 or cuda:0,cuda:1 or cpu"),
    argument("--trials-per-device", type=_integer, default=1, metavar="K", help="trials packed on one device (1)"),
    argument("--cluster", metavar="ADDRESS", help="a Dask scheduler address (with --executor dask)"),
    argument("--offload", action="store_true", help="move torch state to the CPU between rungs"),
    argument_group("Journal"),
    argument("--storage", metavar="DIR", help="where studies live ($HBMAGIC_DIR, else ./.hbmagic)"),
    argument("--study", metavar="NAME", help="the study's name (default: derived from the cell)"),
    argument("--new", action="store_true", help="start a fresh study even if this cell's study exists"),
    argument_group("Output"),
    argument("-o", dest="output", metavar="VAR", help="bind the Result to VAR (also when interrupted)"),
    argument("--apply", action="store_true", help="bind the best configuration's values as notebook names"),
    argument("--no-widget", action="store_true", help="text progress only"),
]

_LINE_ARGUMENTS = [
    argument("command", choices=("plan", "list", "show", "delete"), help="what to do"),
    argument("name", nargs="?", metavar="STUDY", help="the study, for show and delete"),
    *_PLAN_ARGUMENTS,
    argument_group("Studies"),
    argument("--storage", metavar="DIR", help="where studies live ($HBMAGIC_DIR, else ./.hbmagic)"),
    argument("-o", dest="output", metavar="VAR", help="bind the Plan (plan), the studies (list) or the Result (show)"),
]

_OPTION_STRINGS = tuple(
    dict.fromkeys(
        flag
        for decorator in (*_PLAN_ARGUMENTS, *_SEARCH_ARGUMENTS, *_LINE_ARGUMENTS)
        if isinstance(decorator, argument)
        for flag in decorator.args
        if flag.startswith("-")
    )
)

_PLAN_NAMES = tuple(inspect.signature(make_plan).parameters)  # the plan options, by their keyword names


def _decorate(decorators: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """Apply ``decorators`` as if written one above the other, in list order."""

    def apply(func: Any) -> Any:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _usage(err: BaseException, magic: str = "%%hyperband") -> UsageError:
    """The engine's message with option names as the magic spells them (`eta` -> `--eta`)."""
    names = set(Options.names())

    def rename(match: re.Match[str]) -> str:
        word = match.group(1)
        return f"`{_option_name(word)}`" if word in names else match.group(0)

    return UsageError(f"{magic}: " + re.sub(r"`([a-z_]+)`", rename, str(err)))


def _unquote(tokens: Iterable[str]) -> list[str]:
    """Remove shell-style quotes from option tokens (``--study "a b"`` -> ``a b``)."""
    out = []
    for token in tokens:
        if "'" in token or '"' in token:
            try:
                parts = shlex.split(token)
            except ValueError:
                parts = [token]
            out.append(parts[0] if len(parts) == 1 else token)
        else:
            out.append(token)
    return out


def _parse(parser: argparse.ArgumentParser, tokens: list[str], magic: str) -> argparse.Namespace:
    try:
        return parser.parse_args(tokens)
    except UsageError as err:
        message = str(err)
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1).split("=")[0], _OPTION_STRINGS, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
            elif not unknown.group(1).startswith("-"):
                message += "; a search-space entry on the magic line is written name=distribution(...)"
            message += f" (see {magic}?)"
        raise UsageError(f"{magic}: {message}") from None


def _check_variable(name: str | None, magic: str = "%%hyperband") -> None:
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"{magic}: -o {name!r}: a variable name is a Python identifier, such as -o search")


def _merge(line_space: dict[str, Distribution], header: dict[str, Distribution]) -> dict[str, Distribution]:
    for name in header:
        if name in line_space:
            raise SpaceError(f"{name!r} is defined twice in the search space: on the magic line and in a '#|' line")
    space = {**line_space, **header}
    if not space:
        raise SpaceError(
            "no search space: put '#| name: distribution' lines right under the magic line, such as "
            "'#| lr: loguniform(1e-4, 1e-1)', or name=distribution(...) on the magic line"
        )
    return space


def _options(args: argparse.Namespace, storage: Any) -> Options:
    return Options(
        **{name: getattr(args, name) for name in _PLAN_NAMES},
        time_limit=args.time_limit,
        metric=args.metric,
        mode=args.mode,
        seed=args.seed,
        executor=args.executor,
        workers=args.workers,
        devices=args.devices,
        trials_per_device=args.trials_per_device,
        cluster=args.cluster,
        offload=args.offload,
        storage=storage,
        study=args.study,
        new=args.new,
        max_failures=args.max_failures,
        trial_timeout=args.trial_timeout,
    )


def _storage(given: str | None) -> Any:
    if given is not None:
        return given
    from .study import default_storage

    return default_storage()


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@magics_class
class HyperbandMagics(Magics):
    """``%%hyperband`` (a cell becomes a Hyperband search) and ``%hyperband`` (plans and stored studies)."""

    @no_var_expand
    @magic_arguments(name="%hyperband")
    @_decorate(_PLAN_ARGUMENTS + _SEARCH_ARGUMENTS)
    @cell_magic("hyperband")
    def hyperband_cell(self, line: str, cell: str) -> None:
        """Run a Hyperband search over the search space, with the cell body as the training function.

        The search space sits on ``#| name: distribution`` lines right under the
        magic line, or as ``name=distribution`` on the magic line, or both:
        uniform(a, b), loguniform(a, b), randint(a, b) (both ends included),
        lograndint(a, b), quniform(a, b, q), choice(v1, v2, ...), or a literal.

        The body runs once per evaluation, as a function whose parameters are
        the hyperparameters and ``budget`` (the resource to reach), ``trial``
        (id, config, seed, start, state, ...), ``report(**metrics)`` and
        ``device``; notebook variables are readable, names it assigns stay
        inside. Train from ``trial.start`` to ``budget``, keep what the next rung
        continues from in ``trial.state``, and report the metric.

        Each search is journaled: running the same cell again resumes it (also
        after a kernel restart or an interrupt); a changed body or space, or
        --new, starts a new study.

        Example::

            %%hyperband --max-budget 27 --eta 3 --metric val_error -o search
            #| lr: loguniform(1e-3, 1e-1)
            #| hidden: randint(16, 256)
            for epoch in range(trial.start, budget):
                ...
                report(val_error=error)
        """
        args, space, body, options = self._prepare(line, cell)
        self._run(args, space, body, options)

    @no_var_expand
    @magic_arguments(name="hyperband")
    @_decorate(_LINE_ARGUMENTS)
    @line_magic("hyperband")
    def hyperband_line(self, line: str) -> None:
        """Show a plan, or manage stored studies.

        %hyperband plan --max-budget 81 --eta 3 [--convention table] [-o VAR]
            prints the bracket table, evaluations and total resource; runs nothing.
        %hyperband list [-o VAR]
            the stored studies.
        %hyperband show STUDY [-o VAR]
            a study's summary (its Result bound to VAR with -o).
        %hyperband delete STUDY
            removes a study and its saved states.
        """
        args = _parse(self.hyperband_line.parser, _unquote(shlex.split(line)), "%hyperband")
        command = args.command
        if command in ("show", "delete") and not args.name:
            raise UsageError(f"%hyperband {command}: give the study's name, as in %hyperband {command} NAME")
        if command in ("plan", "list") and args.name:
            raise UsageError(f"%hyperband {command} takes no study name, but {args.name!r} was given")
        if command == "delete" and args.output:
            raise UsageError("%hyperband delete takes no -o")
        _check_variable(args.output, f"%hyperband {command}")
        if command == "plan":
            self._plan(args)
        elif command == "list":
            self._list(args)
        elif command == "show":
            self._show(args)
        else:
            self._delete(args)

    # -- the cell magic ------------------------------------------------------------------------

    def _prepare(self, line: str, cell: str) -> tuple[argparse.Namespace, Any, Any, Options]:
        from .space import Space

        try:
            tokens, line_space = split_magic_line(line)
        except SpaceError as err:
            raise _usage(err) from None
        args = _parse(self.hyperband_cell.parser, _unquote(tokens), "%%hyperband")
        _check_variable(args.output)
        namespace = self.shell.user_ns
        try:
            header, text = parse_header(cell)
            dims = _merge(line_space, header)
            options = _options(args, _storage(args.storage))
            body = compile_body(text, list(dims), namespace, self.shell.transform_cell)
            space = Space(dims)
        except (*USER_ERRORS, BodyError) as err:
            raise _usage(err) from None
        return args, space, body, options

    def _view(self, args: argparse.Namespace) -> Any:
        from .display import live_view

        return live_view(widget=not args.no_widget)

    def _run(self, args: argparse.Namespace, space: Any, body: Any, options: Options) -> None:
        from .study import StudyBusyError, StudyMismatchError
        from .tune import Search

        try:
            search = Search(body.objective(), space, options, key_source=body.key, label=_label(body))
        except (*USER_ERRORS, StudyMismatchError, StudyBusyError) as err:
            raise _usage(err) from None
        with search:
            print(search.banner)
            try:
                result = search.run([self._view(args)])
            except SearchFailed as err:
                kept = self._keep(args, err.result)
                if kept:
                    print("\n".join(kept))
                raise _usage(f"the search stopped: {err}") from None
            except USER_ERRORS as err:
                raise _usage(err) from None
        lines = self._keep(args, result)
        if result.reason is EndReason.INTERRUPTED:
            done = result.evaluations
            lines.append(
                f"Interrupted: {done} finished evaluation{'s are' if done != 1 else ' is'} kept in study "
                f"{result.study}. Run this cell again to resume."
            )
        lines.append(result.summary())
        print("\n".join(lines))

    def _keep(self, args: argparse.Namespace, result: Any) -> list[str]:
        """Bind ``-o VAR`` and ``--apply``; the lines saying what was bound."""
        lines: list[str] = []
        if result is None:
            return lines
        namespace = self.shell.user_ns
        if args.output:
            namespace[args.output] = result
            lines.append(f"-o: the Result is in `{args.output}`")
        if args.apply:
            best = result.best
            if best is None:
                lines.append("--apply: no evaluation completed, so no name was bound")
            else:
                bound = []
                for name, value in best.config.items():
                    old = f"was {_short(namespace[name])}" if name in namespace else "was not defined"
                    namespace[name] = value
                    bound.append(f"{name} = {_short(value)} ({old})")
                lines.append("--apply bound the best configuration: " + "; ".join(bound))
        return lines

    # -- the line magic ------------------------------------------------------------------------

    def _plan(self, args: argparse.Namespace) -> None:
        try:
            plan = make_plan(**{name: getattr(args, name) for name in _PLAN_NAMES})
        except USER_ERRORS as err:
            raise _usage(err, "%hyperband plan") from None
        self._bind(args, plan, "Plan")
        print(plan.table())

    def _list(self, args: argparse.Namespace) -> None:
        from .study import list_studies

        with _studies("%hyperband list"):
            storage = _storage(args.storage)
            studies = list_studies(storage)
        self._bind(args, studies, "list of studies")
        if not studies:
            print(f"no studies in {storage}")
            return
        print(f"studies in {storage}:")
        for study in studies:
            print(f"  {study}")

    def _show(self, args: argparse.Namespace) -> None:
        from .study import load_study

        with _studies("%hyperband show"):
            result = load_study(args.name, _storage(args.storage))
        self._bind(args, result, "Result")
        print(result.summary())

    def _bind(self, args: argparse.Namespace, value: Any, what: str) -> None:
        if args.output:
            self.shell.user_ns[args.output] = value
            print(f"-o: the {what} is in `{args.output}`")

    def _delete(self, args: argparse.Namespace) -> None:
        from .study import delete_study

        with _studies("%hyperband delete"):
            storage = _storage(args.storage)
            delete_study(args.name, storage)
        print(f"deleted study {args.name} from {storage}")


@contextmanager
def _studies(magic: str) -> Iterator[None]:
    """Stored-study errors (no such study, busy, a bad storage folder) as UsageErrors."""
    from .study import StudyBusyError

    try:
        yield
    except (*USER_ERRORS, StudyBusyError, OSError) as err:
        raise _usage(err, magic) from None


def _label(body: Any) -> str:
    """The readable part of the study's name: the hyperparameters (the key's hash follows it)."""
    return "-".join(body.names) or "cell"


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext hbmagic``: register ``%%hyperband`` and ``%hyperband``."""
    shell.register_magics(HyperbandMagics)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext hbmagic``: remove the magics."""
    magics = shell.magics_manager.magics
    magics["cell"].pop("hyperband", None)
    magics["line"].pop("hyperband", None)
