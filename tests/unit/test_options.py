"""The one parser (`locator.options`) and the option classes it builds: model, calibration,
evaluation. Bad values give one line naming the key; strings are parsed only from text; a
saved option set builds itself again."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from locator.data import CalibrationOptions
from locator.errors import LocatorError, UnknownNameError
from locator.evaluation import EvaluationOptions, EvaluationRequest
from locator.models import ModelOptions
from locator.options import OptionError, Options, click_options, describe, option, parse


@dataclass(frozen=True, kw_only=True)
class Sketch(Options):
    rank: int = option(8, help="Rank of the sketch.")
    scale: float = option(1.0, help="Scale.", above=0, maximum=4)
    mode: Literal["fast", "exact"] = option("fast", help="How.")
    label: str | None = None
    tags: tuple[str, ...] = option((), help="Tags, repeatable.", flag="--tag")
    verbose: bool = option(False, help="Say more.")


def test_strings_are_parsed_from_text_only():
    values = {"rank": "16", "scale": "0.5", "mode": "exact", "label": "none", "verbose": "yes"}
    assert parse(Sketch, values, text=True) == Sketch(
        rank=16, scale=0.5, mode="exact", label=None, verbose=True
    )
    with pytest.raises(OptionError, match=r"^rank must be an integer, got '16'\.$"):
        parse(Sketch, {"rank": "16"})  # a TOML or Python value must have the type already
    assert parse(Sketch, {"scale": 2, "tags": ["a", "b"]}) == Sketch(scale=2.0, tags=("a", "b"))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"rank": True}, "rank must be an integer, got True."),
        ({"rank": 1.5}, "rank must be an integer, got 1.5."),
        ({"scale": "0"}, "scale must be a number > 0 and <= 4, got '0'."),
        ({"scale": 4.5}, "scale must be a number > 0 and <= 4, got 4.5."),
        ({"mode": "slow"}, "mode must be one of ['fast', 'exact'], got 'slow'."),
        ({"label": ""}, "label must be a non-empty string or None, got ''."),
        ({"verbose": "maybe"}, "verbose must be true or false, got 'maybe'."),
    ],
)
def test_bad_values_name_the_key_in_one_line(values, message):
    with pytest.raises(OptionError) as error:
        parse(Sketch, values, text=True)
    assert str(error.value) == message
    assert error.value.key == next(iter(values))


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(UnknownNameError, match=r"^Unknown option 'rnak'\. Did you mean 'rank'\?"):
        parse(Sketch, {"rnak": 3})
    with pytest.raises(LocatorError) as error:
        parse(Sketch, {"rnak": 3}, "suite.toml: sketches[0].", kind="key")
    assert str(error.value).startswith(
        "suite.toml: sketches[0].rnak: unknown key 'rnak'. Did you mean 'rank'? Valid: "
    )


def test_an_option_class_checks_itself_when_built_in_python():
    with pytest.raises(OptionError, match=r"^scale must be a number > 0 and <= 4, got 0\.$"):
        Sketch(scale=0)
    assert type(Sketch(scale=2).scale) is float  # stored converted, as parse would


def test_a_missing_field_is_named_with_its_help():
    with pytest.raises(OptionError) as error:
        parse(ModelOptions, {"dtype": "float32"})
    assert error.value.key == "path"
    assert str(error.value) == (
        "path missing: Short name (`locator models`), hub id, model folder or .gguf file."
    )


def test_where_names_the_file_and_key():
    with pytest.raises(LocatorError) as error:
        parse(EvaluationOptions, {"limit": 0}, "s.toml: tasks[2].")
    assert str(error.value) == "s.toml: tasks[2].limit: must be a positive integer or None, got 0."


def test_describe_gives_name_type_requirement_default_help_and_flag():
    rows = {row["name"]: row for row in describe(Sketch)}
    assert rows["rank"] == {
        "name": "rank",
        "type": "an integer",
        "required": False,
        "default": 8,
        "help": "Rank of the sketch.",
        "flag": None,
    }
    assert rows["mode"]["type"] == "one of ['fast', 'exact']"
    assert rows["scale"]["type"] == "a number > 0 and <= 4"
    assert rows["label"]["type"] == "a non-empty string or None" and rows["label"]["help"] == ""
    assert rows["tags"]["type"] == "a list, each a non-empty string"
    limit = next(row for row in describe(EvaluationOptions) if row["name"] == "limit")
    assert limit["type"] == "a positive integer or None"
    assert describe(ModelOptions)[0] == {
        "name": "path",
        "type": "a non-empty string",
        "required": True,
        "default": None,
        "help": "Short name (`locator models`), hub id, model folder or .gguf file.",
        "flag": "--model",
    }


def test_click_options_declare_each_field_once_and_build_the_class():
    @click.command()
    @click_options(Sketch, "sketch")
    @click.option("--other", default="x")
    def command(sketch, other):
        click.echo(repr((sketch, other)))

    runner = CliRunner()
    result = runner.invoke(command, ["--rank", "3", "--mode", "exact", "--tag", "a", "--tag", "b"])
    assert result.exit_code == 0, result.output
    expected = Sketch(rank=3, mode="exact", tags=("a", "b"))
    assert result.output.strip() == repr((expected, "x"))
    assert runner.invoke(command, ["--verbose"]).output.strip() == repr((Sketch(verbose=True), "x"))
    shown = runner.invoke(command, ["--help"]).output
    assert "Rank of the sketch." in shown and "[default: 8]" in shown and "--tag TEXT" in shown
    bad = runner.invoke(command, ["--mode", "slow"])
    assert isinstance(bad.exception, OptionError) and "mode must be one of" in str(bad.exception)


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (ModelOptions, {"path": "m", "dtype": "bf16"}, "Unknown dtype 'bf16'. Did you mean"),
        (ModelOptions, {"path": "m", "device_map": "everywhere"}, "Unknown device map"),
        (ModelOptions, {"path": "m", "device": "cpu", "device_map": "auto"}, "not both"),
        (ModelOptions, {"path": "m", "trust_remote_code": "yes"}, "must be true or false"),
        (ModelOptions, {"path": ""}, "path must be a non-empty string"),
        (
            CalibrationOptions,
            {"max_length": 0},
            "max_length must be a positive integer or None, got 0.",
        ),
        (CalibrationOptions, {"batch_size": 0}, "batch_size must be a positive integer, got 0."),
        (CalibrationOptions, {"num_samples": -1}, "num_samples must be a positive integer"),
        (CalibrationOptions, {"pack": 0}, "pack must be a positive integer or None, got 0."),
        (CalibrationOptions, {"pack": 8, "max_length": 4}, "give either max_length (4) or pack"),
        (EvaluationOptions, {"limit": 0}, "limit must be a positive integer or None, got 0."),
        (
            EvaluationOptions,
            {"num_fewshot": -1},
            "num_fewshot must be an integer >= 0 or None, got -1.",
        ),
        (EvaluationOptions, {"fewshot_as_multiturn": True}, "needs apply_chat_template"),
        (EvaluationOptions, {"system_instruction": " "}, "system_instruction must be a non-empty"),
        (EvaluationRequest, {"tasks": []}, "no evaluation task given."),
        (EvaluationRequest, {"tasks": ["a", "a"]}, "task 'a' is given more than once."),
        (
            EvaluationRequest,
            {"tasks": ["a"], "batch_size": 0},
            "must be a positive integer or 'auto', got 0.",
        ),
        (
            EvaluationRequest,
            {"tasks": ["a"], "batch_size": "max"},
            "a positive integer or 'auto', got 'max'.",
        ),
        (EvaluationRequest, {"tasks": ["a"], "data_dir": "/no/such/dir"}, "does not exist"),
    ],
)
def test_each_option_class_checks_its_values_once_on_construction(cls, values, message):
    with pytest.raises(LocatorError) as error:
        cls(**values)
    assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(LocatorError, match="^s.toml: x."):  # the same check through the parser
        parse(cls, values, "s.toml: x.")


@pytest.mark.parametrize(
    "options",
    [
        ModelOptions(path="owner/model", revision="v2", dtype="bfloat16", device_map="auto"),
        CalibrationOptions(num_samples=64, with_replacement=True, pack=128, batch_size=2),
        EvaluationOptions(limit=5, num_fewshot=0, apply_chat_template=True),
        EvaluationRequest(tasks=("gsm8k", "race"), batch_size="auto", data_dir=Path("/")),
    ],
)
def test_a_saved_option_set_builds_itself_again(options):
    saved = json.loads(json.dumps(dataclasses.asdict(options), default=str))
    assert parse(type(options), saved) == options


def test_evaluation_request_is_its_options_plus_how_to_run():
    request = parse(
        EvaluationRequest, {"tasks": ["race"], "limit": "3", "batch_size": "auto"}, text=True
    )
    assert request.limit == 3 and request.batch_size == "auto" and request.tasks == ("race",)
    assert isinstance(request, EvaluationOptions)
    assert EvaluationOptions(num_fewshot=2, limit=3).prompt_options() == {"num_fewshot": 2}
