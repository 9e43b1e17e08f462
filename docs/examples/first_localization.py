"""The tutorial's first localization: MathNeuro on the shipped toy model, pruned, evaluated."""

import locator
from locator.toy import load_toy_model

model, tokenizer = load_toy_model()  # a 0.3M-parameter Llama: arithmetic and a toy grammar
found = locator.localize(
    model,
    tokenizer,
    method="mathneuro",
    target="toy-arithmetic",  # the skill
    controls=["toy-language"],  # what to keep: its top weights are removed from the skill's
    num_samples=200,
    proportion=0.05,
    seed=0,
)
print(f"selected {found.count():,} entries, {found.fraction():.2%} of the scored weights")

tasks = ["toy-arithmetic", "toy-language"]
before = locator.evaluate(model, tokenizer, tasks)
with locator.intervene(model, found, 0.0):  # prune; the weights are restored on exit
    after = locator.evaluate(model, tokenizer, tasks)
for task, metric in [("toy-arithmetic", "exact_match"), ("toy-language", "loss")]:
    print(f"{task} {metric}: {before[task][metric]:.3f} unedited, {after[task][metric]:.3f} pruned")
