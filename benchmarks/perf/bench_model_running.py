"""Performance benchmark: what the methods that run the model cost, as a ratio to one plain
forward pass over the same corpora, on the toy model (locator/toy/checkpoint).

The corpora are the toy suite's: arithmetic problems (the target) and grammar sentences (the
control). For each method, the floor is one batched ``no_grad`` forward pass of the whole model
(logits included) over the corpora the method reads: the target alone for integrated gradients,
the target and the control for attribution patching and the learned mask. Each figure is the
median of `--repeats` runs of a complete `locator.localize` at one proportion (tokenization,
every pass and the selection). What to expect, a backward costing about two forwards:
attribution patching about 1 + 2 x (target's share) forwards, integrated gradients about 1 + 3m
(m = `--ig-steps`), the learned mask about 3 x its steps.

Usage: ``python benchmarks/perf/bench_model_running.py [--samples 64 --ig-steps 20 ...]``;
prints a table and writes JSON (``--out``). Check it runs with
``--samples 4 --ig-steps 2 --mask-steps 2 --repeats 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import locator  # noqa: E402
from locator.rows import batches, token_rows  # noqa: E402
from locator.toy import load_toy_model  # noqa: E402
from locator.toy.data import arithmetic_texts, language_texts  # noqa: E402


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    """The median wall time of `repeats` calls of `run` (after one untimed warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_forward(model: Any, tokenizer: Any, corpora: Sequence[Sequence[str]], size: int) -> None:
    """One batched no_grad forward pass of the whole model over `corpora`, as a method's rows."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for texts in corpora:
            for input_ids, attention_mask in batches(token_rows(tokenizer, texts, None), size):
                model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    use_cache=False,
                )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print the table and write the JSON; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="texts per corpus")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ig-steps", type=int, default=20, help="integrated gradients' m")
    parser.add_argument("--mask-steps", type=int, default=20, help="learned mask's steps")
    parser.add_argument("--proportion", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    model, tokenizer = load_toy_model(device=args.device)
    target = arithmetic_texts(args.samples, seed=0)
    control = language_texts(args.samples, seed=0)
    methods: dict[str, tuple[dict[str, Any], list[list[str]]]] = {
        "attribution-patching": ({}, [control]),
        "integrated-gradients": ({"steps": args.ig_steps}, []),
        "learned-mask": ({"steps": args.mask_steps}, [control]),
    }
    rows = []
    for method, (options, controls) in methods.items():

        def localize(method: str = method, options: Any = options, controls: Any = controls) -> Any:
            return locator.localize(
                model,
                tokenizer,
                method=method,
                options=options,
                target=target,
                controls=controls,
                proportion=args.proportion,
                batch_size=args.batch_size,
                progress=False,
            )

        def forward(controls: Any = controls) -> None:
            plain_forward(model, tokenizer, [target, *controls], args.batch_size)

        floor = median_seconds(forward, args.repeats)
        seconds = median_seconds(localize, args.repeats)
        rows.append(
            {
                "method": method,
                "options": options,
                "corpora": 1 + len(controls),
                "forward_seconds": floor,
                "method_seconds": seconds,
                "ratio": seconds / floor,
            }
        )
    print(f"{'method':<22} {'options':<16} {'forward s':>10} {'method s':>10} {'ratio':>8}")
    for row in rows:
        options = ",".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        print(
            f"{row['method']:<22} {options:<16} {row['forward_seconds']:>10.4f} "
            f"{row['method_seconds']:>10.3f} {row['ratio']:>8.1f}"
        )
    result = {
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
        "rows": rows,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
