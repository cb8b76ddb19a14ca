"""Few-shot / full linear probe, ELEVATER protocol, on cached features.

For each seed: draw k images per class from the train split (or use it all), hold out 20 % of that subset
to pick the weight decay from a small grid, retrain on the whole subset with the best one, and score the
test split. The head is multinomial logistic regression on L2-normalised features, optionally initialised
from the zero-shot text classifier. Reported: mean (and std) over seeds.
"""

from __future__ import annotations

import numpy as np
import torch

from .._loader_protocol import LoadedModel
from ..datasets import Classification, DatasetError
from ..domain import load_templates
from ..features import encode_images, zeroshot_classifier
from ..metrics import per_class_recall

WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def fit_head(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float, init: np.ndarray | None = None,
             steps: int = 300, seed: int = 0) -> np.ndarray:
    """Logistic regression weights (classes × (d + 1)) by full-batch L-BFGS."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    w = torch.zeros(n_classes, x.shape[1] + 1)
    if init is not None:
        w[:, :-1] = torch.from_numpy(init).float() * 10.0  # text weights at a usable temperature
    w.requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    xb = torch.cat([xt, torch.ones(len(xt), 1)], dim=1)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w.T, yt) + weight_decay * (w[:, :-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.concatenate([x, np.ones((len(x), 1))], axis=1) @ w.T).argmax(axis=1)


def few_shot_indices(labels: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if shots is None:
        return rng.permutation(len(labels))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return rng.permutation(np.concatenate(picked))


def linear_probe(loaded: LoadedModel, train: Classification, test: Classification, shots: int | None = None,
                 seeds=(0, 1, 2), init_from_text: bool = False, templates: str | None = None, batch_size: int = 64,
                 workers: int = 2, device: str = "cpu"):
    if train.classnames != test.classnames:
        raise DatasetError(f"{train.uri} and {test.uri} have different class lists")
    n = len(test.classnames)
    x_train = encode_images(loaded, train.images, batch_size, workers, device, desc="train images")
    x_test = encode_images(loaded, test.images, batch_size, workers, device, desc="test images")
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    init = zeroshot_classifier(loaded, test.classnames, load_templates(templates, test.templates), device) \
        if init_from_text else None
    accs, mpcs, chosen = [], [], []
    for seed in seeds:
        idx = few_shot_indices(y_train, shots, seed)
        cut = max(1, int(0.8 * len(idx)))
        fit, held = idx[:cut], idx[cut:]
        best = max(WEIGHT_DECAYS, key=lambda wd: (predict(fit_head(x_train[fit], y_train[fit], n, wd, init, seed=seed),
                                                          x_train[held]) == y_train[held]).mean() if len(held) else 0)
        w = fit_head(x_train[idx], y_train[idx], n, best, init, seed=seed)
        pred = predict(w, x_test)
        accs.append(float((pred == y_test).mean()))
        mpcs.append(float(np.nanmean(per_class_recall(pred, y_test, n))))
        chosen.append(best)
    metrics = {"acc1": float(np.mean(accs)), "acc1_std": float(np.std(accs)),
               "mean_per_class_recall": float(np.mean(mpcs)), "shots": shots if shots is not None else -1,
               "seeds": len(seeds)}
    return metrics, {"weight_decay_per_seed": chosen}
