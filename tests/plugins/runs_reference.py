"""Slow, obviously-correct references for the methods that run the model, written from
METHODS.md ("Methods that run the model"): one text at a time (batch 1, no padding), fp64, loops,
hooks of their own (nothing from `locator.runs`)."""

import copy
import math

import torch

DOWN_PROJECTIONS = ("mlp.down_proj", "mlp.c_proj")  # Llama, GPT-2


def fp64(model):
    """An fp64 copy of `model`."""
    return copy.deepcopy(model).double().eval()


def sites(model):
    """{down-projection parameter name: module}, in model order."""
    return {
        f"{path}.weight": module
        for path, module in model.named_modules()
        if path.endswith(DOWN_PROJECTIONS)
    }


def ids_of(tokenizer, text):
    """The text's token ids as the statistics read them (special tokens included)."""
    return torch.tensor([tokenizer(text)["input_ids"]])


def run(model, ids, edits=None):
    """Log probability of each next token of one text, [seq - 1]; `edits` maps a site name to
    fn(activation [seq, n]) -> replacement [seq, n], applied at that MLP's down projection."""
    handles = []
    for name, module in sites(model).items():
        if edits and name in edits:

            def hook(module, args, edit=edits[name]):
                return (edit(args[0][0])[None],)

            handles.append(module.register_forward_pre_hook(hook))
    try:
        logits = model(input_ids=ids).logits[0].double()
    finally:
        for handle in handles:
            handle.remove()
    log_probs = torch.log_softmax(logits, -1)
    return torch.stack([log_probs[t, ids[0, t + 1]] for t in range(ids.shape[1] - 1)])


def activations(model, ids):
    """{site: the MLP's activations for one text, [seq, n]} (unedited pass)."""
    found = {}

    def keep(name):
        def edit(x):
            found[name] = x.detach().clone()
            return x

        return edit

    with torch.no_grad():
        run(model, ids, {name: keep(name) for name in sites(model)})
    return found


def top_neurons(scores, proportion):
    """{site: sorted neuron indices}: the floor(K * N) best of all neurons (model order on ties)."""
    flat = [(float(v), name, i) for name, s in scores.items() for i, v in enumerate(s.tolist())]
    order = {name: n for n, name in enumerate(scores)}
    flat.sort(key=lambda e: (-e[0], order[e[1]], e[2]))
    count = math.floor(proportion * len(flat) * (1 + 1e-12))
    chosen = {name: [] for name in scores}
    for value, name, i in flat[:count]:
        if value > -math.inf:
            chosen[name].append(i)
    return {name: sorted(indices) for name, indices in chosen.items()}


def attribution_patching(model, tokenizer, target, controls):
    """score_i = |sum over target tokens of (mean_C(a_i) - a_i) dL_T/da_i|, per site [n]."""
    model = fp64(model)
    sums, tokens = {}, 0
    for text in [t for corpus in controls for t in corpus]:
        ids = ids_of(tokenizer, text)
        for name, a in activations(model, ids).items():
            for t in range(a.shape[0]):
                sums[name] = sums.get(name, 0) + a[t]
        tokens += ids.shape[1]
    means = {name: total / tokens for name, total in sums.items()}
    predicted = sum(ids_of(tokenizer, text).shape[1] - 1 for text in target)
    scores = {name: torch.zeros_like(mean) for name, mean in means.items()}
    for text in target:
        ids = ids_of(tokenizer, text)
        leaves = {n: a.requires_grad_(True) for n, a in activations(model, ids).items()}
        loss = (
            -run(model, ids, {n: (lambda x, n=n, leaves=leaves: leaves[n]) for n in leaves}).sum()
            / predicted
        )
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
        for name, a in leaves.items():
            for t in range(a.shape[0]):
                scores[name] += (means[name] - a[t].detach()) * grads[name][t]
    return {name: score.abs() for name, score in scores.items()}


def integrated_gradients(model, ids, steps, groups=None, objective="log_likelihood"):
    """{site: IG of each neuron for one text, [n]}: a * (1/m) sum_k dF/da at (k/m) a, F the
    text's log-likelihood (or its tokens' mean probability), the sites of each group (default:
    all together) scaled at once."""
    clean = activations(model, ids)
    groups = groups or [list(clean)]
    result = {}
    for group in groups:
        totals = {name: torch.zeros_like(clean[name]) for name in group}
        for k in range(1, steps + 1):
            leaves = {n: (clean[n] * k / steps).requires_grad_(True) for n in group}
            edits = {n: (lambda x, n=n, leaves=leaves: leaves[n]) for n in group}
            f = objective_of(run(model, ids, edits), objective)
            for name, grad in zip(
                group, torch.autograd.grad(f, list(leaves.values())), strict=True
            ):
                totals[name] += grad
        for name in group:
            result[name] = sum(clean[name][t] * totals[name][t] / steps for t in range(len(ids[0])))
    return result


def objective_of(log_probs, objective):
    """F of one text from its next-token log probabilities."""
    if objective == "log_likelihood":
        return log_probs.sum()
    return sum(lp.exp() for lp in log_probs) / len(log_probs)


def learned_mask(model, tokenizer, target, controls, count, steps, lr, penalty_step, seed):
    """The trained log_alpha of every neuron (model order), as METHODS.md and the plugin's
    docstring define the training, one text at a time in fp64."""
    beta, gamma, zeta = 2 / 3, -0.1, 1.1
    names = list(sites(model))
    sizes = [sites(model)[n].weight.shape[1 if "down_proj" in n else 0] for n in names]
    total = sum(sizes)
    start = math.log(count / (total - count)) + beta * math.log(-gamma / zeta)
    log_alpha = torch.full((total,), start, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_alpha], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    penalty = 0.0
    corpora = [(target, True)] + [(c, False) for c in controls]
    for _ in range(steps):
        u = torch.rand(total, generator=generator, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        optimizer.zero_grad()
        for texts, is_target in corpora:
            predicted = sum(ids_of(tokenizer, text).shape[1] - 1 for text in texts)
            for text in texts:
                s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / beta)
                z = torch.clamp(s * (zeta - gamma) + gamma, 0, 1)
                kept = dict(zip(names, (1 - z).split(sizes), strict=True))
                edits = {n: (lambda x, n=n, kept=kept: x * kept[n]) for n in names}
                log_probs = run(model, ids_of(tokenizer, text), edits)
                if is_target:
                    term = sum(math.e**lp for lp in log_probs) / predicted
                else:
                    term = -log_probs.sum() / predicted
                term.backward()
        removed = torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta)).sum()
        (penalty * removed / count).backward()
        optimizer.step()
        penalty = max(0.0, penalty + penalty_step * (removed.item() / count - 1))
    return dict(zip(names, log_alpha.detach().split(sizes), strict=True))
