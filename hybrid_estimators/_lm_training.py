"""Stage 2's training: the ridge start of the head, then LoRA fine-tuning with early stopping."""

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from ._lm_forward import head_inputs, logits, predict_ids
from ._lm_loading import autocast, head_module
from ._lm_tokens import chunks, collate
from ._progress import progress_enabled
from .text import as_frame

logger = logging.getLogger("hybrid_estimators.qwen")

_RIDGE_ALPHAS = np.logspace(-3, 4, 15)
#: Penalties :func:`fit_ridge_head` tries (on standardised features).
STANDARDISED_ALPHAS = np.logspace(-1, 6, 22)
_GRADIENT_CLIP_NORM = 1.0


def fine_tune(estimator, model, tokenizer, ids, Y, train, validation, rng):
    import torch

    device, dtype = estimator._device_and_dtype()
    if estimator.adapter is None and estimator.head_init == "ridge":
        fit_head_by_ridge(estimator, model, tokenizer, [ids[i] for i in train], Y[train])
    weights = torch.as_tensor(inverse_variances(Y[train]), device=device)
    targets = torch.as_tensor(Y, dtype=torch.float32, device=device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=estimator.learning_rate)
    n_steps = max(1, estimator.max_epochs * math.ceil(len(train) / estimator.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / n_steps)
    )

    def validation_loss():
        model.eval()
        predicted = predict_ids(estimator, 
            model, tokenizer, [ids[i] for i in validation], desc="validating"
        )
        return weighted_mse(predicted, Y[validation], weights.cpu().numpy())

    estimator.train_loss_curve_, estimator.validation_loss_curve_ = [], []
    best_state, best_loss, n_stale = None, None, 0
    if len(validation):
        best_loss = validation_loss()
        best_state = trainable_copy(model)
        estimator.validation_loss_curve_.append(best_loss)
    progress = tqdm(
        total=n_steps if estimator.max_epochs else 0,
        desc="fine-tuning",
        disable=not progress_enabled(estimator.show_progress_bar, n_steps, 1),
    )
    estimator.n_epochs_ = 0
    for epoch in range(estimator.max_epochs):
        model.train()
        losses = []
        for batch in chunks(rng.permutation(train), estimator.batch_size):
            inputs = collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
            with autocast(device, dtype):
                predicted = logits(estimator, model, inputs).float()
            loss = (((predicted - targets[batch]) ** 2) * weights).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, _GRADIENT_CLIP_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.update()
        estimator.n_epochs_ = epoch + 1
        estimator.train_loss_curve_.append(float(np.mean(losses)))
        if not len(validation):
            logger.info("epoch %d: train loss %.4f", epoch + 1, losses[-1])
            continue
        loss = validation_loss()
        estimator.validation_loss_curve_.append(loss)
        logger.info(
            "epoch %d: train loss %.4f, validation loss %.4f",
            epoch + 1,
            estimator.train_loss_curve_[-1],
            loss,
        )
        if loss < best_loss:
            best_loss, best_state, n_stale = loss, trainable_copy(model), 0
        else:
            n_stale += 1
            if n_stale >= estimator.n_iter_no_change:
                logger.info("early stopping after epoch %d", epoch + 1)
                break
    progress.close()
    if best_state is not None:
        restore_trainable(model, best_state)
    estimator.best_validation_loss_ = best_loss
    return model


def fit_head_by_ridge(estimator, model, tokenizer, ids, Y):
    """Start the head from a ridge regression on the base model's features."""
    import torch
    from sklearn.linear_model import RidgeCV

    head = head_module(model)
    if not isinstance(head, torch.nn.Linear):
        logger.info("head_init='ridge' skipped: the head is not one linear layer")
        return
    features = head_inputs(estimator, model, tokenizer, ids)
    if estimator._own_head():
        ridge = RidgeCV(alphas=_RIDGE_ALPHAS, fit_intercept=False).fit(features, Y)
        weight, bias, alpha = ridge.coef_.reshape(head.weight.shape), 0.0, ridge.alpha_
    else:
        weight, bias, alpha = fit_ridge_head(features, Y)
    logger.info("head fitted by ridge regression (alpha=%g)", alpha)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight.reshape(head.weight.shape)))
        if head.bias is not None:
            head.bias.copy_(torch.as_tensor(np.broadcast_to(bias, head.bias.shape).copy()))


def fit_ridge_head(features, Y, alphas=None):
    """Fit a linear head by ridge regression on standardised features.

    The head of a :class:`QwenRegressor` with `pooling` or `layers` set:
    ``StandardScaler`` + ``RidgeCV`` (one penalty for all targets, chosen by
    efficient leave-one-out), folded into one linear layer so that
    ``features @ weight.T + bias`` is the ridge's prediction.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        Pooled hidden states, as :meth:`QwenRegressor.hidden_features`
        returns them.
    Y : array-like of shape (n_samples, n_targets) or (n_samples,)
        Scores.
    alphas : array-like of float or None, default=None
        Candidate penalties; None: ``np.logspace(-1, 6, 22)``.

    Returns
    -------
    weight : ndarray of shape (n_targets, n_features)
    bias : ndarray of shape (n_targets,)
    alpha : float
        The chosen penalty.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> F, Y = rng.normal(size=(50, 20)), rng.uniform(0, 10, size=(50, 3))
    >>> weight, bias, alpha = fit_ridge_head(F, Y)
    >>> (F @ weight.T + bias).shape
    (50, 3)
    """
    from sklearn.linear_model import RidgeCV

    features = np.asarray(features, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y2 = Y.reshape(len(Y), -1)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    alphas = STANDARDISED_ALPHAS if alphas is None else np.asarray(alphas, dtype=float)
    ridge = RidgeCV(alphas=alphas).fit((features - mean) / scale, Y2)
    weight = ridge.coef_.reshape(Y2.shape[1], -1) / scale
    bias = np.atleast_1d(ridge.intercept_) - weight @ mean
    return weight, bias, float(ridge.alpha_)


def validate_targets(y, X, n_samples):
    try:
        Y = np.array(y, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"y must hold numbers: {error}") from None
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2:
        raise ValueError(f"y must be 1-D or 2-D; got shape {Y.shape}.")
    if Y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} rows but y has {Y.shape[0]}.")
    if Y.shape[1] == 0:
        raise ValueError("y has no columns.")
    bad = np.flatnonzero(~np.isfinite(Y).all(axis=1))
    if len(bad):
        frame = as_frame(X)
        ids = frame["id"].to_numpy()[bad] if "id" in frame.columns else None
        named = ", ".join(
            f"{row}" + ("" if ids is None else f" (id={ids[k]!r})")
            for k, row in enumerate(bad[:10])
        )
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"y has NaN or infinite targets in rows {named}{more}.")
    return Y


def trainable_copy(model):
    return {
        name: parameter.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def restore_trainable(model, state):
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def cuda_devices():
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


def inverse_variances(Y):
    variances = Y.var(axis=0)
    return np.where(variances > 1e-12, 1.0 / np.maximum(variances, 1e-12), 1.0).astype(
        np.float32
    )


def weighted_mse(predicted, Y, weights):
    return float(np.mean(((predicted - Y) ** 2) * weights))
