"""The typed-config engine: strict building, coercion, --set overrides, and flags generated from a
settings dataclass (one definition, no second list of argparse defaults)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

import pytest

from twinlm import config
from twinlm.align.settings import BCOSettings, SFTSettings
from twinlm.cli import build_parser
from twinlm.errors import UserError


@dataclass
class Inner:
    name: str = "a"
    size: int = 1


@dataclass
class Toy:
    learning_rate: float = field(default=1e-3, metadata={"flag": "lr", "help": "learning rate"})
    max_steps: int = field(default=-1, metadata={"flag": "steps", "aliases": ("max-steps",), "help": "steps"})
    mode: str = field(default="x", metadata={"help": "the mode", "choices": ("x", "y")})
    fast: bool = field(default=False, metadata={"help": "go fast"})
    careful: bool = field(default=True, metadata={"help": "be careful"})
    targets: list[str] | None = field(default=None, metadata={"help": "targets"})
    limit: int | None = field(default=None, metadata={"help": "a cap"})
    hidden: int = 7  # no help: no flag
    items: list[Inner] = field(default_factory=lambda: [Inner("a"), Inner("b")])


def parse(argv: list[str]) -> Toy:
    p = argparse.ArgumentParser()
    config.add_flags(p, Toy)
    return config.from_flags(Toy, p.parse_args(argv))


def test_build_refuses_unknown_keys_and_names_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown setting key 'items\[1\]\.sise'; valid keys here: name, size"):
        config.build(Toy, {"items": [{"name": "a"}, {"sise": 3}]}, what="setting")
    built = config.build(Toy, {"max_steps": "12", "fast": "yes", "targets": "q", "items": [{"size": "4"}]})
    assert (built.max_steps, built.fast, built.targets, built.items[0].size) == (12, True, ["q"], 4)


@pytest.mark.parametrize("data, message", [
    ({"max_steps": 1.5}, r"max_steps=1.5 is not a valid int"),
    ({"fast": "maybe"}, r"fast='maybe' is not a valid bool"),
    ({"mode": None}, r"mode may not be empty"),
    ({"items": {"name": "a"}}, r"items must be a list"),
])
def test_coercion_errors_name_the_key(data, message):
    with pytest.raises(UserError, match=message):
        config.build(Toy, data)


def test_overrides_address_list_items_by_name_or_index():
    base = config.to_dict(Toy())
    merged = config.merge(base, config.parse_overrides(["items.b.size=5", "items.0.name=z", "limit=3"]))
    toy = config.build(Toy, merged)
    assert [(i.name, i.size) for i in toy.items] == [("z", 1), ("b", 5)] and toy.limit == 3
    with pytest.raises(UserError, match="no such item; items are a, b"):
        config.merge(base, config.parse_overrides(["items.c.size=5"]))
    with pytest.raises(UserError, match="--set expects key.sub=value"):
        config.parse_overrides(["limit"])


def test_dump_reads_back_into_the_same_object(tmp_path):
    toy = Toy(limit=4, targets=["a", "b"], items=[Inner("q", 9)])
    config.dump(toy, tmp_path / "toy.yaml")
    assert config.build(Toy, config.read_yaml(tmp_path / "toy.yaml")) == toy


def test_flags_come_from_the_dataclass_and_absent_flags_keep_its_defaults():
    assert parse([]) == Toy()
    toy = parse(["--lr", "0.5", "--steps", "3", "--mode", "y", "--fast", "--no-careful", "--targets", "a, b",
                 "--limit", "9"])
    assert (toy.learning_rate, toy.max_steps, toy.mode, toy.fast, toy.careful, toy.targets, toy.limit) == (
        0.5, 3, "y", True, False, ["a", "b"], 9)
    assert parse(["--max-steps", "4"]).max_steps == 4  # the old spelling still works


def test_help_shows_defaults_and_hides_aliases_and_undocumented_fields():
    p = argparse.ArgumentParser()
    config.add_flags(p, Toy)
    text = p.format_help()
    assert "--steps N" in text and "(default: -1)" in text and "(default: 0.001)" in text
    assert "--max-steps" not in text and "--hidden" not in text and "--items" not in text
    assert "--careful, --no-careful" in text


def test_a_bad_flag_value_is_a_one_line_error_naming_the_flag():
    with pytest.raises(UserError, match=r"--steps='many' is not a valid int"):
        parse(["--steps", "many"])


def _subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def _settings_classes():
    from twinlm.align.settings import GenerationSettings
    from twinlm.commands.convert import CrossSettings
    from twinlm.commands.encode import EncodeSettings
    from twinlm.commands.search import SearchSettings
    from twinlm.data.prepare.settings import PrepareSettings

    return [(("prepare",), PrepareSettings), (("sft",), SFTSettings), (("bco",), BCOSettings), (("generate",), GenerationSettings),
            (("encode",), EncodeSettings), (("search",), SearchSettings),
            (("convert", "decoder-to-encoder"), CrossSettings), (("convert", "encoder-to-decoder"), CrossSettings)]


@pytest.mark.parametrize("path, cls", _settings_classes(), ids=lambda v: "-".join(v) if isinstance(v, tuple) else "")
def test_every_documented_setting_of_a_command_is_its_flag(path, cls):
    """The flags are the dataclass: each documented field has one, with its help, and nothing else
    of the command holds a default for it."""
    actions = _subparser(*path)._actions
    documented = [f for f in fields(cls) if "help" in f.metadata]
    assert {f.name for f in fields(cls)} - {f.name for f in documented} <= {"extra"}
    for f in documented:
        mine = [a for a in actions if a.dest == f.name]
        assert mine and all(a.default is argparse.SUPPRESS for a in mine), f.name
        assert any(config.flag_of(f) in a.option_strings and a.help != argparse.SUPPRESS for a in mine), f.name


@pytest.mark.parametrize("command, cls", [("sft", SFTSettings), ("bco", BCOSettings)])
def test_sft_and_bco_flags_build_their_settings(command, cls):
    args = build_parser().parse_args([command, "m", "--data", "d", "--out", "o", "--max-steps", "3", "--lora"])
    settings = config.from_flags(cls, args)
    assert settings.max_steps == 3 and settings.learning_rate == cls.LORA_LR


@pytest.mark.parametrize("cls", [SFTSettings, BCOSettings])
def test_a_lora_run_gets_a_lora_scale_learning_rate(cls):
    assert cls().learning_rate == cls.FULL_LR and cls(lora=True).learning_rate == cls.LORA_LR
    assert cls.LORA_LR >= 10 * cls.FULL_LR
    assert cls(lora=True, learning_rate=1e-6).learning_rate == 1e-6  # an explicit --lr wins
    command = "sft" if cls is SFTSettings else "bco"
    lr_help = next(a.help for a in _subparser(command)._actions if a.dest == "learning_rate")
    assert f"{cls.FULL_LR:g} for full fine-tuning" in lr_help and f"{cls.LORA_LR:g} with --lora" in lr_help


def test_settings_check_their_combinations():
    with pytest.raises(UserError, match="contradict"):
        SFTSettings(assistant_only_loss=True, full_sequence_loss=True)
    with pytest.raises(UserError, match="drop --ref-model or --lora"):
        BCOSettings(lora=True, ref_model="x")
    assert BCOSettings(max_length=100).max_prompt_length == 50


def test_finetune_schedule_flags_override_only_what_they_name():
    from twinlm.commands.finetune import recipe_from_args

    argv = ["finetune", "dense", "--base", "org/model", "--out", "o"]
    plain = recipe_from_args(build_parser().parse_args(argv))
    flagged = recipe_from_args(build_parser().parse_args([*argv, "--steps", "5", "--lr", "0.1"]))
    assert (flagged.training.max_steps, flagged.training.lr) == (5, 0.1)
    assert flagged.training.batch_size == plain.training.batch_size and plain.training.max_steps != 5
    with pytest.raises(UserError, match="--batch-size='big' is not a valid int"):
        recipe_from_args(build_parser().parse_args([*argv, "--batch-size", "big"]))


def test_convert_flags_build_the_cross_settings():
    from twinlm.commands.convert import CrossSettings

    args = build_parser().parse_args(["convert", "decoder-to-encoder", "m", "--out", "o", "--tokens", "2e6"])
    assert config.from_flags(CrossSettings, args) == CrossSettings(tokens=2_000_000)
    with pytest.raises(UserError, match="--tokens must be at least 1"):
        config.from_flags(CrossSettings, build_parser().parse_args(
            ["convert", "encoder-to-decoder", "m", "--out", "o", "--tokens", "0"]))


def test_prepare_flags_build_the_prepare_settings():
    from twinlm.data.prepare.settings import PrepareSettings

    argv = ["prepare", "corpus.txt", "--tokenizer", "t", "--out", "o"]
    assert config.from_flags(PrepareSettings, build_parser().parse_args(argv)) == PrepareSettings()
    args = build_parser().parse_args([*argv, "--heldout-share", "0.1", "--seed", "7", "--text-column", "body"])
    assert config.from_flags(PrepareSettings, args) == PrepareSettings(heldout_share=0.1, seed=7, text_column="body")
    with pytest.raises(UserError, match="--heldout-max-tokens='many' is not a valid int"):
        config.from_flags(PrepareSettings, build_parser().parse_args([*argv, "--heldout-max-tokens", "many"]))


def test_building_the_cli_imports_no_model_stack():
    """Flags come from settings dataclasses at start-up; those must live in light modules."""
    import subprocess
    import sys

    code = ("import sys; from twinlm.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_eval_budget_flags_are_eval_configs_and_suite_sees_only_those_given(command, tmp_path):
    from twinlm.commands.suite import suite_settings
    from twinlm.evaluate.config import EvalConfig, eval_config, flag_values

    actions = _subparser(command)._actions
    documented = [f for f in fields(EvalConfig) if "help" in f.metadata]
    assert {"tasks", "lrs", "task_steps", "task_lrs", "seeds", "steps", "batch_size", "max_length", "max_items",
            "pooling"} <= {f.name for f in documented}
    for f in documented:
        mine = [a for a in actions if a.dest == f.name]
        assert mine and all(a.default is argparse.SUPPRESS for a in mine), f.name
    argv = [command, "m", "--out", str(tmp_path / "o")]
    plain = build_parser().parse_args(argv)
    assert eval_config(plain) == EvalConfig(default_tasks=True)
    suite = suite_settings(plain)  # nothing given: Ettin's sweep decides every budget
    assert (suite.seeds, suite.steps, suite.batch_sizes, suite.max_length, suite.max_items, suite.lrs) == (None,) * 6
    flagged = build_parser().parse_args([*argv, "--seeds", "2", "--batch-size", "16", "--pooling", "cls",
                                         "--lrs", "1e-4,2e-4", "--tasks", "choice", "--task-steps", "retrieval=9",
                                         "--task-lrs", "retrieval=1e-3/3e-4,classification=5e-4"])
    values = flag_values(flagged)
    assert values == {"seeds": 2, "batch_size": 16, "pooling": "cls", "lrs": [1e-4, 2e-4], "tasks": ["choice"],
                      "task_steps": {"retrieval": 9}, "task_lrs": {"retrieval": [1e-3, 3e-4], "classification": [5e-4]}}
    assert eval_config(flagged).default_tasks is False
    suite = suite_settings(flagged)
    assert (suite.seeds, suite.batch_sizes, suite.pooling, suite.steps, suite.lrs) == ((42, 43), (16,), "cls", None,
                                                                                        (1e-4, 2e-4))
    for bad, message in ((["--steps", "0"], "--steps must be >= 1, got 0"),
                         (["--batch-size", "1"], "--batch-size must be >= 2, got 1"),
                         (["--lrs", "1e-4,fast"], r"--lrs\[1\]='fast' is not a valid float"),
                         (["--lrs", "0"], "--lrs must hold positive numbers, got 0"),
                         (["--task-steps", "retrieval"], "--task-steps takes KEY=VALUE pairs such as retrieval=150"),
                         (["--task-steps", "retrieval=many"], r"--task-steps.retrieval='many' is not a valid int"),
                         (["--max-train", "0"], "--max-train must be >= 1, got 0"),
                         (["--data-dir", str(tmp_path / "nowhere")], "is not a folder"),
                         (["--resume"], "--resume applies to a benchmark suite; add --suite SPEC")):
        with pytest.raises(UserError, match=message):
            suite_settings(build_parser().parse_args([*argv, *bad]))


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_suite_flags_are_suite_settings_fields(command, tmp_path):
    """Every documented SuiteSettings field is a flag of both commands, and the parsed flags give
    the settings back (lists comma-separated, --classification-data repeatable, paths as Paths)."""
    from twinlm.commands.suite import suite_settings
    from twinlm.evaluate.suite.base import SuiteSettings

    dests = {a.dest for a in _subparser(command)._actions}
    documented = {f.name for f in fields(SuiteSettings) if "help" in f.metadata}
    assert {"suite", "data_dir", "dry_run", "resume", "classification_data", "mteb_tasks", "lm_eval_limit"} <= documented
    assert documented <= dests
    argv = [command, "m", "--out", str(tmp_path / "o"), "--suite", "glue:sst2,retrieval", "--data-dir", str(tmp_path),
            "--classification-data", "a.jsonl", "--classification-data", "org/b", "--mteb-tasks", "SciFact, NFCorpus",
            "--dry-run", "--lm-eval-limit", "5", "--max-train", "100"]
    settings = suite_settings(build_parser().parse_args(argv))
    assert settings == SuiteSettings(suite="glue:sst2,retrieval", data_dir=tmp_path, classification_data=("a.jsonl", "org/b"),
                                     mteb_tasks=("SciFact", "NFCorpus"), dry_run=True, lm_eval_limit=5, max_train=100)
    only_mine = suite_settings(build_parser().parse_args([command, "m", "--out", "o", "--classification-data", "a.csv"]))
    assert only_mine.suite == "classification"
    # --nli-data alone replaces the world's NLI data; beside --suite it is one more classification task.
    world = suite_settings(build_parser().parse_args([command, "m", "--out", "o", "--nli-data", "n.jsonl"]))
    assert (world.suite, world.classification_data) == (None, ())
    suite = suite_settings(build_parser().parse_args([command, "m", "--out", "o", "--nli-data", "n.jsonl", "--suite", "glue"]))
    assert suite.classification_data == ("n.jsonl",)
