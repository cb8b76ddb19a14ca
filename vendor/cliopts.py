"""Command-line conventions shared by the three CLIs (docs/cli.md's introduction states them).

- `default_workers()`: the default of every `--workers` option, min(4, CPU count), so a 2-core machine never gets
  more DataLoader workers than cores (PyTorch warns that such a loader may freeze). `WORKERS_HELP` is what help
  shows as its default (`show_default=WORKERS_DEFAULT`), the same on every machine so generated docs do not vary.
- `renamed(old, new)`: a click decorator that keeps an option's old spelling working for one release, hidden from
  help, printing a deprecation message on stderr when it is used:

      @main.command("build")
      @renamed("--k", "--recall-at")                 # above the new option's decorator
      @click.option("--recall-at", default=10, show_default=True, help="k of the recall@k target.")
      def build_command(recall_at): ...

  `react-index build --k 5` then runs with recall_at=5 and prints
  "react-index build: --k is deprecated, use --recall-at (the old spelling goes in 0.3)". Giving both spellings
  with different values is a usage error. The old option takes the new one's type, nargs, flag-ness and
  multiplicity; the command function never sees it.
- `positional_renamed(value, old_value, old, new)`: the same for an option that became a positional argument
  (react-tune train's `--manifest` → `RETRIEVAL`): declare the argument `required=False` and the old option
  hidden, and call it first thing in the command.
"""

from __future__ import annotations

import functools
import os

import click

REMOVED_IN = "0.3"  # the release that drops the old spellings renamed in 0.2
WORKERS_DEFAULT = "min(4, CPU count)"


def default_workers() -> int:
    """Default number of worker processes for data loading: min(4, os.cpu_count())."""
    return min(4, os.cpu_count() or 1)


def _param_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _given(value) -> bool:
    return value is not None and value != () and value is not getattr(click.core, "UNSET", None)


def _satisfiable(option_class):
    """`option_class` whose missing value is taken from a deprecated alias given on the command line."""

    class Renamed(option_class):
        def process_value(self, ctx, value):
            if not _given(value):
                for alias in self.aliases:
                    if _given(ctx.params.get(alias)):
                        value = ctx.params[alias]
                        break
            return super().process_value(ctx, value)

    Renamed.__name__ = option_class.__name__
    return Renamed


def renamed(old: str, new: str, *, removed_in: str = REMOVED_IN):
    """Decorator keeping `old` (e.g. "--k") as a hidden, deprecated alias of the option spelled `new` (e.g.
    "--recall-at"), which must already be declared below it on the same command. Using `old` prints
    "PROG CMD: OLD is deprecated, use NEW (the old spelling goes in REMOVED_IN)" on stderr and sets NEW's
    parameter; giving both with different values is a usage error."""
    hidden_name = "_deprecated_" + _param_name(old)

    def decorate(f):
        params = getattr(f, "__click_params__", [])
        target = next((p for p in params if isinstance(p, click.Option) and new in (*p.opts, *p.secondary_opts)),
                      None)
        if target is None:
            raise TypeError(f"renamed({old!r}, {new!r}): declare the option {new} below this decorator")
        if target.required:  # a required option given by its old spelling is not missing
            target.__class__ = _satisfiable(type(target))
            target.aliases = [*getattr(target, "aliases", []), hidden_name]
        kwargs = {"hidden": True, "default": None, "expose_value": True, "help": f"Deprecated: use {new}.",
                  "is_eager": True}  # processed before the new option, which may need its value
        if target.is_flag and not target.secondary_opts:
            kwargs.update(is_flag=True, flag_value=True, default=None)
        else:
            kwargs.update(type=target.type, nargs=target.nargs, multiple=target.multiple)
        click.option(old, hidden_name, **kwargs)(f)
        params = f.__click_params__

        @functools.wraps(f)
        def wrapper(*args, **values):
            value = values.pop(hidden_name, None)
            if _given(value):
                ctx = click.get_current_context()
                click.echo(f"{ctx.command_path}: {old} is deprecated, use {new} (the old spelling goes in "
                           f"{removed_in})", err=True)
                source = ctx.get_parameter_source(target.name)
                if source is click.core.ParameterSource.COMMANDLINE and values[target.name] != value:
                    raise click.UsageError(f"{old} (deprecated) and {new} give different values; pass only {new}",
                                           ctx)
                values[target.name] = value
            return f(*args, **values)

        wrapper.__click_params__ = params
        return wrapper

    return decorate


def positional_renamed(value, old_value, old: str, new: str, *, removed_in: str = REMOVED_IN):
    """The value of positional argument `new`, also accepted for one release as the deprecated option `old` (with
    a message on stderr); neither, or both with different values, is a usage error."""
    ctx = click.get_current_context()
    if _given(old_value):
        click.echo(f"{ctx.command_path}: {old} is deprecated, pass {new} as an argument (the old spelling goes in "
                   f"{removed_in})", err=True)
        if _given(value) and value != old_value:
            raise click.UsageError(f"{old} (deprecated) and {new} give different values; pass only {new}", ctx)
        return old_value
    if not _given(value):
        raise click.UsageError(f"Missing argument '{new}'.", ctx)
    return value
