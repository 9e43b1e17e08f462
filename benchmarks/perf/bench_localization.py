"""Performance benchmark: localization at the cost of a forward pass, against the reference.

Builds a random Llama-style model of a realistic shape, calibration corpora of random words
(a target and a control), and measures in one run, as medians of repetitions:

1. plain batched ``no_grad`` forward passes over both corpora (the floor), for the full model
   and for the decoder alone (the statistics pass stops before the unscored head);
2. locator's statistics collection for MathNeuro over the same texts and batches;
3. a complete MathNeuro localization for the paper's 8 proportions (statistics + selection);
4. the reference algorithm as METHODS.md describes it (batch size 1, a weight-sized
   |W| x norm product per linear and sample accumulated in bf16, everything recomputed and the
   model reloaded for each proportion), on two proportions, extrapolated to 8 where labeled;
5. peak memory beyond the loaded model (torch's allocator peak) during 1-4, and the bytes of the
   8 selections;
6. apply + restore of a pruning intervention at each of the 8 proportions against reloading the
   model from disk (its files dropped from the page cache first) and from the page cache, and
   against copying all weights in memory (the memory-traffic floor of any reload).

Usage: ``python benchmarks/perf/bench_localization.py [--hidden 512 --layers 8 ...]``; prints a
table and writes JSON (``--out``). See benchmarks/perf/README.md for the latest figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from locator_plugins.statistics import INPUT_NORM_SUM  # noqa: E402
from torch import nn  # noqa: E402

import locator  # noqa: E402
from locator.architecture import is_linear  # noqa: E402
from locator.passes import collect_statistics  # noqa: E402
from locator.rows import batches, tokenize  # noqa: E402

PROPORTIONS = [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15]


# Set-up: model, tokenizer, corpora.


def build_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer over the words w0..w{vocab_size-3}, plus <pad> and <s>."""
    from locator.toy.tokenizer import word_tokenizer

    vocabulary = {"<pad>": 0, "<s>": 1, **{f"w{i}": i + 2 for i in range(vocab_size - 2)}}
    return word_tokenizer(vocabulary, bos="<s>", pad="<pad>", unk="<pad>")


def build_model(args: argparse.Namespace) -> nn.Module:
    """A random Llama-style model (gated MLP, untied head) of the requested shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_tokens + 8,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(dtype=getattr(torch, args.dtype), device=args.device)
    return model.eval()


def corpus(count: int, vocab: int, min_tokens: int, max_tokens: int, seed: int) -> list[str]:
    """`count` texts of random words, lengths uniform in [min_tokens, max_tokens)."""
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(count):
        length = int(torch.randint(min_tokens, max_tokens, (1,), generator=generator))
        ids = torch.randint(0, vocab - 2, (length,), generator=generator)
        texts.append(" ".join(f"w{i}" for i in ids.tolist()))
    return texts


# Measurement helpers.


class PeakMemory:
    """Peak bytes held by torch's allocator for `device` beyond what it held at entry.

    The allocator's own running total, read from the profiler's memory events: exact, and blind
    to what the C library keeps of freed memory or how often it touches fresh pages (which made
    a resident-size reading swing by half the weights between runs). NumPy's allocations are
    not seen (locator's packed-bit selections; the caller adds them).
    """

    def __init__(self, device: str) -> None:
        self.device_type = 1 if device == "cuda" else 0  # the profiler's CPU / CUDA codes
        self.profile = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]
            + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else []),
            profile_memory=True,
        )

    def __enter__(self) -> PeakMemory:
        self.profile.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.profile.__exit__(*exc)
        with tempfile.TemporaryDirectory() as directory:
            trace = Path(directory) / "trace.json"
            self.profile.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text())["traceEvents"]
        memory = sorted(  # stable: events of the same microsecond keep the trace's order
            (
                event
                for event in events
                if event.get("name") == "[memory]"
                and event["args"].get("Device Type") == self.device_type
            ),
            key=lambda event: event["ts"],
        )
        totals = [event["args"]["Total Allocated"] for event in memory]
        # The running total carries over from earlier profiles: count from its value at entry.
        at_entry = totals[0] - memory[0]["args"]["Bytes"] if memory else 0
        self.extra = max(totals, default=at_entry) - at_entry


def timed(function: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Wall seconds of one call (synchronizing the GPU), and its result."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def median_time(
    function: Callable[[], Any],
    repeats: int,
    device: str,
    before: Callable[[], Any] | None = None,
) -> float:
    """Median wall seconds over `repeats` calls, each preceded by an untimed `before()`."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        times.append(timed(function, device)[0])
    return statistics.median(times)


def evict_from_page_cache(directory: Path) -> None:
    """Drop the files under `directory` from the OS page cache, so the next read is from disk."""
    os.sync()
    for path in directory.iterdir():
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


# The measured operations.


def plain_pass(model: nn.Module, token_ids: list[list[int]], batch_size: int, body: bool) -> None:
    """Batched no-grad forward passes: the full model, or the decoder alone (`body`)."""
    device = next(model.parameters()).device
    module = model.base_model if body else model
    with torch.no_grad():
        for input_ids, attention_mask in batches(token_ids, batch_size):
            module(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                use_cache=False,
            )


def locator_statistics(
    model: nn.Module, tokenizer: Any, corpora: list[list[str]], batch_size: int
) -> list[Any]:
    """locator's MathNeuro statistics for each corpus."""
    return [
        collect_statistics(
            model, tokenizer, texts, kinds={INPUT_NORM_SUM}, batch_size=batch_size, progress=False
        )
        for texts in corpora
    ]


def locator_selection(model: nn.Module, statistics: list[Any]) -> list[Any]:
    """The 8-proportion MathNeuro selection from collected statistics (one ranking per matrix)."""
    context = locator.build_context(model, statistics[0], statistics[1:])
    return locator.run_method(model, locator.get_localizer("mathneuro"), context, PROPORTIONS)


def reference_mathneuro(
    model_dir: Path, args: argparse.Namespace, corpora: list[list[str]], proportion: float
) -> dict[str, torch.Tensor]:
    """The reference algorithm for one proportion, from METHODS.md: reload the model, run each
    text alone (batch 1, no padding), add |W| * ||X_s[:, j]|| for every linear into a
    weight-sized bf16 score tensor, then per matrix top-K(target) minus top-K(control)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = (
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
        .to(args.device)
        .eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    linears = {
        path: module
        for path, module in model.named_modules()
        if is_linear(module) and "lm_head" not in path
    }
    tops = []
    for texts in corpora:
        scores = {
            path: torch.zeros_like(m.weight, dtype=torch.bfloat16) for path, m in linears.items()
        }
        handles = []
        for path, module in linears.items():

            def hook(
                module: nn.Module,
                inputs: tuple[torch.Tensor, ...],
                score: torch.Tensor = scores[path],
            ) -> None:
                norms = inputs[0][0].float().norm(dim=0)  # [d_in]
                score += (module.weight.abs() * norms[None, :]).to(torch.bfloat16)

            handles.append(module.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                for text in texts:
                    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(args.device)
                    model(input_ids=ids)
        finally:
            for handle in handles:
                handle.remove()
        tops.append(
            {
                path: torch.topk(
                    score.flatten().float(), math.floor(proportion * score.numel())
                ).indices
                for path, score in scores.items()
            }
        )
        del scores
    masks = {}
    for path, module in linears.items():
        mask = torch.zeros(module.weight.numel(), dtype=torch.bool, device=args.device)
        mask[tops[0][path]] = True
        mask[tops[1][path]] = False
        masks[f"{path}.weight"] = mask.view(module.weight.shape)
    return masks


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, as a JSON-ready dict."""
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer(args.vocab)
    model = build_model(args)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    parameters = sum(p.numel() for p in model.parameters())
    corpora = [
        corpus(args.samples, args.vocab, args.min_tokens, args.max_tokens, seed=1),
        corpus(args.samples, args.vocab, args.min_tokens, args.max_tokens, seed=2),
    ]
    token_ids = [tokenize(tokenizer, texts, None) for texts in corpora]
    tokens = sum(len(ids) for ids in token_ids[0] + token_ids[1])
    device, repeats, batch_size = args.device, args.repeats, args.batch_size

    def both(body: bool) -> None:
        for ids in token_ids:
            plain_pass(model, ids, batch_size, body)

    both(False)  # warm-up: allocator, kernels
    plain_full = median_time(lambda: both(False), repeats, device)
    plain_decoder = median_time(lambda: both(True), repeats, device)
    with PeakMemory(device) as plain_memory:
        both(True)
    stats_time = median_time(
        lambda: locator_statistics(model, tokenizer, corpora, batch_size), repeats, device
    )
    # The complete localization: timed, then once more for each phase's memory peak.
    full_times = []
    for _ in range(repeats):
        pass_seconds, collected = timed(
            lambda: locator_statistics(model, tokenizer, corpora, batch_size), device
        )
        select_seconds, selections = timed(lambda c=collected: locator_selection(model, c), device)
        full_times.append(pass_seconds + select_seconds)
    full_time = statistics.median(full_times)
    del selections, collected
    with PeakMemory(device) as statistics_memory:
        collected = locator_statistics(model, tokenizer, corpora, batch_size)
    with PeakMemory(device) as selection_memory:
        selections = locator_selection(model, collected)
    selection_bytes = sum(s.nbytes for s in selections)
    # Selections stored as packed bits live in NumPy arrays, unseen by torch's allocator: count
    # them as held from the start of the phase (an upper bound).
    bits_bytes = sum(
        stored.nbytes
        for localization in selections
        for form, stored in (s.stored() for s in localization.selections.values())
        if form == "bits"
    )
    selection_peak = selection_memory.extra + bits_bytes
    # The reference, per proportion; its agreement with locator (bf16 sums: high, not perfect).
    with tempfile.TemporaryDirectory() as directory:
        model_dir = Path(directory)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        reference = {}
        for proportion in args.reference_proportions:
            seconds, masks = timed(
                lambda p=proportion: reference_mathneuro(model_dir, args, corpora, p), device
            )
            ours = selections[PROPORTIONS.index(proportion)]
            theirs = locator.Localization.from_masks(
                masks, method="reference", proportion=proportion
            )
            reference[proportion] = {
                "seconds": seconds,
                "jaccard_with_locator": ours.jaccard(theirs),
            }
            del masks, theirs
        with PeakMemory(device) as reference_memory:
            reference_mathneuro(model_dir, args, corpora, args.reference_proportions[0])

        def reload() -> None:
            # safetensors maps the file lazily: touch every weight so that it is really loaded.
            loaded = (
                type(model).from_pretrained(model_dir, dtype=getattr(torch, args.dtype)).to(device)
            )
            for parameter in loaded.parameters():
                parameter.detach().sum()

        reload_time = median_time(
            reload, repeats, device, before=lambda: evict_from_page_cache(model_dir)
        )
        reload_cached_time = median_time(reload, repeats, device)
    copy_time = median_time(
        lambda: [p.detach().clone() for p in model.parameters()], repeats, device
    )

    def apply_and_restore(selection: Any) -> None:
        with locator.intervene(model, selection, 0.0):
            pass

    intervention = {
        str(p): median_time(lambda s=selection: apply_and_restore(s), repeats, device)
        for p, selection in zip(PROPORTIONS, selections, strict=True)
    }
    edited = {str(p): s.count() / parameters for p, s in zip(PROPORTIONS, selections, strict=True)}
    reference_per_proportion = statistics.mean(r["seconds"] for r in reference.values())
    reference_eight = 8 * reference_per_proportion
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "device": device,
            "torch": torch.__version__,
        },
        "model": {
            "parameters": parameters,
            "weight_bytes": weight_bytes,
            "dtype": args.dtype,
            "hidden": args.hidden,
            "layers": args.layers,
            "intermediate": args.intermediate,
        },
        "corpora": {"texts": 2 * args.samples, "tokens": tokens, "batch_size": batch_size},
        "seconds": {
            "plain_pass_full_model": plain_full,
            "plain_pass_decoder": plain_decoder,
            "statistics": stats_time,
            "mathneuro_8_proportions": full_time,
            "reference_per_proportion": {str(p): r["seconds"] for p, r in reference.items()},
            "reference_8_proportions_extrapolated": reference_eight,
            "intervention_apply_restore": intervention,
            "model_reload_from_disk": reload_time,
            "model_reload_from_page_cache": reload_cached_time,
            "copy_all_weights": copy_time,
        },
        "intervention_fraction_edited": edited,
        "tokens_per_second": {
            "plain_pass_full_model": tokens / plain_full,
            "statistics": tokens / stats_time,
        },
        "memory": {
            "plain_decoder_pass_peak_extra_bytes": plain_memory.extra,
            "statistics_peak_extra_bytes": statistics_memory.extra,
            "selection_8_peak_extra_bytes": selection_peak,
            "selections_8_bytes": selection_bytes,
            "reference_peak_extra_bytes": reference_memory.extra,
        },
        "agreement": {str(p): r["jaccard_with_locator"] for p, r in reference.items()},
        "ratios": {
            "statistics / plain decoder pass (target <= 1.10)": stats_time / plain_decoder,
            "statistics / plain full pass": stats_time / plain_full,
            "mathneuro 8 proportions / plain full pass (target <= 1.3)": full_time / plain_full,
            "reference 8 proportions (extrapolated) / mathneuro 8 (target >= 6)": reference_eight
            / full_time,
            "plain decoder pass peak extra memory / weight bytes": plain_memory.extra
            / weight_bytes,
            "statistics pass peak extra memory / weight bytes": statistics_memory.extra
            / weight_bytes,
            "producing + holding 8 selections, peak extra / weight bytes (target < 0.30)": (
                selection_peak / weight_bytes
            ),
            "8 selections bytes / weight bytes": selection_bytes / weight_bytes,
            "reference peak extra memory / weight bytes": reference_memory.extra / weight_bytes,
            **{
                f"intervention apply+restore K={p} ({edited[p]:.3%} of weights edited) / "
                "reload from disk (target < 0.05)": t / reload_time
                for p, t in intervention.items()
            },
            "model reload from disk / copying all weights in memory": reload_time / copy_time,
            **{
                f"intervention apply+restore K={p} / copying all weights in memory": t / copy_time
                for p, t in intervention.items()
            },
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=32, help="texts per corpus")
    parser.add_argument("--min-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-proportions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args(argv)
    for proportion in args.reference_proportions:
        if proportion not in PROPORTIONS:
            parser.error(f"--reference-proportions must be among {PROPORTIONS}")
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    model = result["model"]
    print(
        f"model: {model['parameters'] / 1e6:.1f}M parameters ({model['dtype']}), "
        f"{result['corpora']['tokens']:,} tokens in {result['corpora']['texts']} texts, "
        f"{result['machine']['torch_threads']} thread(s) on {result['machine']['device']}"
    )
    print(f"{'measure':<72} {'value':>10}")
    for name, value in result["seconds"].items():
        if isinstance(value, dict):
            for key, seconds in value.items():
                print(f"{'seconds: ' + name + ' K=' + key:<72} {seconds:>10.3f}")
        else:
            print(f"{'seconds: ' + name:<72} {value:>10.3f}")
    for name, value in result["ratios"].items():
        print(f"{'ratio: ' + name:<72} {value:>10.3f}")
    for key, value in result["agreement"].items():
        print(f"{'jaccard(locator, bf16 reference) at K=' + key:<72} {value:>10.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
