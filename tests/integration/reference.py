"""Slow, obviously-correct computations written from METHODS.md: batch size 1, fp64, loops."""

import copy
import math

import torch
from torch import nn


def mathneuro(model, tokenizer, target, controls, proportion):
    """{parameter name: (bool mask in stored layout, bool mask of the entries tied at one of
    the cuts, which any valid top-K may take or leave)} by the paper's definition."""
    target_norms, _ = channel_statistics(model, tokenizer, target)
    control_norms = [channel_statistics(model, tokenizer, c)[0] for c in controls]
    modules = dict(model.named_modules())
    result = {}
    for path, norm in target_norms.items():
        module = modules[path]
        weight = module.weight.detach().double()
        # nn.Linear stores [d_out, d_in]; Conv1D stores [d_in, d_out].
        broadcast = (
            (lambda a: a[None, :]) if isinstance(module, nn.Linear) else (lambda a: a[:, None])
        )
        k = math.floor(proportion * weight.numel())

        def top(a, weight=weight, broadcast=broadcast, k=k):
            scores = weight.abs() * broadcast(a)
            chosen, boundary = top_set(scores, k)
            return chosen, near(scores, boundary)

        chosen, ties = top(norm)
        for c in control_norms:
            removed, tied = top(c[path])
            chosen -= removed
            ties |= tied
        mask = torch.zeros(weight.numel(), dtype=torch.bool)
        mask[list(chosen)] = True
        tied_mask = torch.zeros(weight.numel(), dtype=torch.bool)
        tied_mask[list(ties)] = True
        result[f"{path}.weight"] = (mask.view(weight.shape), tied_mask.view(weight.shape))
    return result


# Wanda and LAPE (METHODS.md), for every model family: some blocks (OPT's) flatten the tokens of
# a batch around their MLP, so inputs are read as [tokens, channels] whatever their shape.


def run_capturing(model, tokenizer, text, modules, output=False):
    """Run one text (batch 1, no padding) and return ({key: the input of modules[key], or its
    output with `output`, as [seq, channels]}, number of tokens). Hooks are removed after."""
    captured, handles = {}, []
    for key, module in modules.items():
        if output:

            def hook(module, args, result, key=key):
                captured[key] = result.detach().reshape(-1, result.shape[-1])

            handles.append(module.register_forward_hook(hook))
        else:

            def pre_hook(module, args, key=key):
                captured[key] = args[0].detach().reshape(-1, args[0].shape[-1])

            handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return captured, ids.shape[1]


def token_inputs(model, tokenizer, text):
    """{linear module path inside the decoder: its input for one text, [seq, d_in] fp64}."""
    from locator.architecture import decoder_blocks

    blocks_path, _ = decoder_blocks(model)
    linears = {
        path: module
        for path, module in model.named_modules()
        if path.startswith(blocks_path + ".")
        and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")
    }
    captured, _ = run_capturing(model, tokenizer, text, linears)
    return {path: x.double() for path, x in captured.items()}


def channel_statistics(model, tokenizer, texts):
    """Per linear: (sum over samples of per-sample channel L2 norms, sum of squares over all
    tokens), fp64, one token at a time."""
    norms, squares = {}, {}
    for text in texts:
        for path, x in token_inputs(model, tokenizer, text).items():
            square = torch.zeros(x.shape[1], dtype=torch.float64)
            for t in range(x.shape[0]):
                square += x[t] ** 2
            norms[path] = norms.get(path, 0) + square.sqrt()
            squares[path] = squares.get(path, 0) + square
    return norms, squares


def wanda(model, tokenizer, texts, proportion, norm="pooled", group="row"):
    """{parameter name: (bool mask in stored layout, bool mask of the entries tied at a cut)}:
    the top-K of |W_ij| * a_j per output row (or per matrix), a_j = sqrt(sum of squares)
    (pooled) or the sum of per-sample norms."""
    norms, squares = channel_statistics(model, tokenizer, texts)
    modules = dict(model.named_modules())
    result = {}
    for path in norms:
        module = modules[path]
        channel = squares[path].sqrt() if norm == "pooled" else norms[path]
        weight = module.weight.detach().double()
        matrix = weight if isinstance(module, nn.Linear) else weight.t()  # [d_out, d_in]
        d_out, d_in = matrix.shape
        score = [
            [abs(float(matrix[i, j])) * float(channel[j]) for j in range(d_in)]
            for i in range(d_out)
        ]
        chosen, tied = [], []

        def close(a, b):
            return abs(a - b) <= 1e-5 * abs(b)

        if group == "row":
            for i in range(d_out):
                ranked = sorted(range(d_in), key=lambda j, i=i: -score[i][j])
                count = math.floor(proportion * d_in)
                chosen += [(i, j) for j in ranked[:count]]
                if count:
                    cut = score[i][ranked[count - 1]]
                    tied += [(i, j) for j in range(d_in) if close(score[i][j], cut)]
        else:
            cells = sorted(
                ((i, j) for i in range(d_out) for j in range(d_in)),
                key=lambda c: -score[c[0]][c[1]],
            )
            count = math.floor(proportion * d_out * d_in)
            chosen = cells[:count]
            if count:
                cut = score[cells[count - 1][0]][cells[count - 1][1]]
                tied = [(i, j) for i, j in cells if close(score[i][j], cut)]
        masks = []
        for cells in (chosen, tied):
            mask = torch.zeros(d_out, d_in, dtype=torch.bool)
            for i, j in cells:
                mask[i, j] = True
            masks.append(mask if isinstance(module, nn.Linear) else mask.t())
        result[f"{path}.weight"] = tuple(masks)
    return result


def active_counts(model, tokenizer, texts, activations):
    """(per down-projection parameter name: how many tokens each neuron's activation is > 0 on,
    number of tokens), one text at a time. `activations` maps the down projection's parameter
    name to the path of the module computing that MLP's activation."""
    modules = dict(model.named_modules())
    counts = {name: 0 for name in activations}
    tokens = 0
    sites = {name: modules[path] for name, path in activations.items()}
    for text in texts:
        captured, count = run_capturing(model, tokenizer, text, sites, output=True)
        tokens += count
        for name, output in captured.items():
            counts[name] = counts[name] + (output > 0).sum(0)
    return counts, tokens


def lape(model, tokenizer, corpora, activations, top_rate, filter_rate, activation_bar_ratio):
    """LAPE by METHODS.md. Returns ({down projection name: sorted neurons of the target (corpus
    0)}, the set of (name, neuron) whose entropy ties the selection's cut, which either side
    may order differently)."""
    probability = {}  # (name, neuron) -> [P for each corpus]
    for texts in corpora:
        counts, tokens = active_counts(model, tokenizer, texts, activations)
        for name, count in counts.items():
            for j in range(count.numel()):
                probability.setdefault((name, j), []).append(int(count[j]) / tokens)
    return lape_select(probability, activations, top_rate, filter_rate, activation_bar_ratio)


def lape_select(probability, activations, top_rate, filter_rate, activation_bar_ratio, tie=1e-12):
    """LAPE's selection from {(name, neuron): [P for each corpus]}: the lowest-entropy neurons
    that belong to corpus 0, and the neurons whose entropy is within `tie` of the cut."""
    neurons = list(probability)  # model order
    values = sorted(p for ps in probability.values() for p in ps)

    def rank_value(rate):
        return values[max(round(rate * len(values)), 1) - 1]

    tau, tau2 = rank_value(filter_rate), rank_value(activation_bar_ratio)
    entropy = {}
    for neuron, ps in probability.items():
        total = sum(ps)
        h = 0.0
        for p in ps:
            share = p / total if total > 0 else 0.0
            if share > 0:
                h -= share * math.log(share)
        entropy[neuron] = h if any(p > tau for p in ps) else math.inf
    ranked = sorted(neurons, key=lambda n: entropy[n])  # stable: ties in model order
    count = round(top_rate * len(neurons))
    kept = ranked[:count]
    cut = entropy[ranked[count - 1]] if count else -math.inf
    ties = {n for n in neurons if entropy[n] == cut or abs(entropy[n] - cut) < tie}
    chosen = {name: [] for name in activations}
    for name, j in kept:
        if probability[(name, j)][0] > tau2:
            chosen[name].append(j)
    return chosen, ties


# The MathNeuro repository's LAPE.py, written from METHODS.md's list of its behaviour: per
# dataset (in its order), only the last text, written to a file with two newlines and read back
# line by line; the lines as one batch padded by the tokenizer, no attention mask, a bf16 model;
# every position counted; counters never reset; P = count so far / lines; the first dataset's
# neurons applied.


def lape_published(model, tokenizer, datasets, activations, top_rate, filter_rate, bar, folder):
    """(neurons LAPE.py applies, entropy ties at the cut) for `datasets` in the script's order."""
    model16 = copy.deepcopy(model).bfloat16()
    modules = dict(model16.named_modules())
    counters = {name: torch.zeros(0, dtype=torch.int32) for name in activations}
    probability = {}
    for i, texts in enumerate(datasets):
        path = folder / f"dataset{i}.txt"
        with open(path, "w") as f:
            f.write(f"{texts[-1]}\n\n")
        lines = open(path).readlines()
        input_ids = tokenizer(lines, return_tensors="pt", padding=True).input_ids
        captured, handles = {}, []
        for name, module_path in activations.items():

            def hook(module, args, output, name=name, captured=captured):
                captured[name] = output.detach().reshape(-1, output.shape[-1])

            handles.append(modules[module_path].register_forward_hook(hook))
        with torch.no_grad():
            model16(input_ids)
        for handle in handles:
            handle.remove()
        for name, output in captured.items():
            active = (output.float() > 0).sum(0).to(torch.int32)
            counters[name] = active if not counters[name].numel() else counters[name] + active
            for j in range(active.numel()):
                p = float(counters[name][j].long() / torch.tensor(len(lines)))  # float32
                probability.setdefault((name, j), []).append(p)
    return lape_select(probability, activations, top_rate, filter_rate, bar, tie=1e-6)


# Gradient and per-sample activation statistics, and the methods built on them.


def decoder_linears(model):
    """{module path: linear} of the decoder blocks' nn.Linear and Conv1D modules."""
    from locator.architecture import decoder_blocks

    blocks_path, _ = decoder_blocks(model)
    return {
        path: module
        for path, module in model.named_modules()
        if path.startswith(blocks_path + ".")
        and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")
    }


def as_matrix(module, tensor):
    """A weight-shaped tensor of `module` as [d_out, d_in] (Conv1D stores [d_in, d_out])."""
    return tensor if isinstance(module, nn.Linear) else tensor.t()


def snip_saliency(model, tokenizer, texts):
    """{parameter name: sum over texts of |W * dL/dW| as [d_out, d_in]}, L a text's mean
    next-token loss, one text at a time by autograd (fp64 for an fp64 model)."""
    linears = decoder_linears(model)
    totals = {path: 0 for path in linears}
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        for path, module in linears.items():
            totals[path] = totals[path] + as_matrix(
                module, (module.weight * module.weight.grad).abs()
            )
    model.zero_grad()
    return {f"{path}.weight": total.detach() for path, total in totals.items()}


def top_set(scores, count):
    """(set of the flat indices of the `count` largest scores, the count-th largest score)."""
    flat = scores.flatten()
    values, indices = torch.sort(flat, descending=True, stable=True)
    boundary = float(values[count - 1]) if count else math.inf
    return set(indices[:count].tolist()), boundary


def near(scores, value, tolerance=1e-5):
    """Flat indices whose score is within a relative `tolerance` of `value` (ties at a cut)."""
    flat = scores.flatten()
    return set(((flat - value).abs() <= tolerance * abs(value)).nonzero()[:, 0].tolist())


def set_difference(target_scores, control_scores, proportion, control_proportion):
    """{name: (selected flat [d_out, d_in] indices, indices tied at one of the cuts)}."""
    result = {}
    for name, target in target_scores.items():
        chosen, boundary = top_set(target, math.floor(proportion * target.numel()))
        ties = near(target, boundary)
        for controls in control_scores:
            q = proportion if control_proportion is None else control_proportion
            removed, control_boundary = top_set(controls[name], math.floor(q * target.numel()))
            chosen -= removed
            ties |= near(controls[name], control_boundary)
        result[name] = (chosen, ties)
    return result


def sample_mean_activations(model, tokenizer, texts, down_projections):
    """{down projection parameter name: [samples, neurons] fp64 mean over each text's tokens of
    the down projection's input}, one text at a time."""
    modules = dict(model.named_modules())
    means = {f"{path}.weight": [] for path in down_projections}
    sites = {path: modules[path] for path in down_projections}
    for text in texts:
        captured, _ = run_capturing(model, tokenizer, text, sites)
        for path, x in captured.items():
            means[f"{path}.weight"].append(x.double().mean(0))
    return {name: torch.stack(rows) for name, rows in means.items()}


def welch_t(target, control):
    """Welch's t per column of two [samples, units] fp64 tables (two-pass variances)."""
    n, m = target.shape[0], control.shape[0]
    mean, control_mean = target.mean(0), control.mean(0)
    variance = ((target - mean) ** 2).sum(0) / (n - 1)
    control_variance = ((control - control_mean) ** 2).sum(0) / (m - 1)
    return (mean - control_mean) / (variance / n + control_variance / m).sqrt()


def selectivity(model, tokenizer, target, controls, down_projections, proportion):
    """({down projection name: selected neurons}, {(name, neuron) tied at the cut})."""
    ours = sample_mean_activations(model, tokenizer, target, down_projections)
    theirs = [sample_mean_activations(model, tokenizer, c, down_projections) for c in controls]
    units = []
    for name in ours:
        pooled = torch.cat([table[name] for table in theirs])
        t = welch_t(ours[name], pooled)
        units += [(float(t[j]), name, j) for j in range(t.numel())]
    ranked = sorted(units, key=lambda unit: -unit[0])  # stable: ties in model order
    count = math.floor(proportion * len(units))
    cut = ranked[count - 1][0]
    chosen = {name: [] for name in ours}
    for _, name, j in ranked[:count]:
        chosen[name].append(j)
    ties = {(name, j) for t, name, j in units if abs(t - cut) <= 1e-6 * abs(cut)}
    return {name: sorted(js) for name, js in chosen.items()}, ties


# The published arithmetic of MathNeuro's code (METHODS.md, "Measured against the authors' own
# code"), written from that description: a bf16 model, one text per forward in corpus order,
# every nn.Linear of the model with a weight of its own (so an untied head, never GPT-2's
# Conv1D, never a name containing "embed"), a bf16 running sum of |W| x each sample's channel
# norms, int(K x numel) per matrix.


def published_scores(model, tokenizer, texts):
    """{parameter name: bf16 [d_out, d_in] running sum over texts of |W| * ||x_j||}."""
    model16 = copy.deepcopy(model).bfloat16().requires_grad_(False)
    owned = {id(p): name for name, p in model16.named_parameters()}  # tied weights appear once
    linears = {
        path: module
        for path, module in model16.named_modules()
        if isinstance(module, nn.Linear)
        and owned.get(id(module.weight)) == f"{path}.weight"
        and "embed" not in path
    }
    totals = {f"{path}.weight": torch.zeros_like(m.weight) for path, m in linears.items()}
    for text in texts:
        captured, _ = run_capturing(model16, tokenizer, text, linears)  # batch 1, bf16
        for path, x in captured.items():
            norm = x.float().square().sum(0).sqrt().bfloat16()  # [d_in]
            name = f"{path}.weight"
            for i in range(totals[name].shape[0]):  # one output row at a time
                totals[name][i] = totals[name][i] + linears[path].weight[i].abs() * norm
    return totals


def mathneuro_published(model, tokenizer, target, controls, proportion):
    """{name: (selected flat indices, indices tied at one of the cuts)} of the published
    MathNeuro: top int(K numel) of the target's bf16 scores minus each control's."""
    ours = published_scores(model, tokenizer, target)
    theirs = [published_scores(model, tokenizer, c) for c in controls]
    result = {}
    for name, scores in ours.items():
        count = int(scores.numel() * proportion)
        chosen, boundary = top_set(scores.float(), count)
        ties = near(scores.float(), boundary, tolerance=0)
        for control in theirs:
            removed, control_boundary = top_set(control[name].float(), count)
            chosen -= removed
            ties |= near(control[name].float(), control_boundary, tolerance=0)
        result[name] = (chosen, ties)
    return result


# Helpers of the method tests (tests/plugins/): where each tiny family keeps its MLP modules.

# Down projection and activation module names (inside an MLP) of the two test families.
ACTIVATIONS = {"llama": ("mlp.down_proj", "mlp.act_fn"), "gpt2": ("mlp.c_proj", "mlp.act")}
DOWN_PROJECTION = {family: down for family, (down, _) in ACTIVATIONS.items()}


def family_of(model):
    """The family of a tiny test model: "gpt2" or "llama"."""
    return "gpt2" if type(model).__name__.startswith("GPT2") else "llama"


def activation_modules(model, family):
    """{down-projection parameter name: path of that MLP's activation module}."""
    down, activation = ACTIVATIONS[family]
    return {
        f"{path}.weight": path.removesuffix(down) + activation
        for path, _ in model.named_modules()
        if path.endswith("." + down) and ".mlp." in path + "."
    }


def matrix_indices(found, model):
    """{parameter name: selected flat indices into the [d_out, d_in] matrix}."""
    modules = dict(model.named_modules())
    result = {}
    for name, mask in found.masks.items():
        module = modules[name.removesuffix(".weight")]
        result[name] = set(as_matrix(module, mask).flatten().nonzero()[:, 0].tolist())
    return result
