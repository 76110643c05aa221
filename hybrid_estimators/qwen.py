"""Stage 2: :class:`QwenRegressor`, a decoder LM with a regression head and LoRA.

The estimator is here; its loading (:mod:`._lm_loading`), forward passes
(:mod:`._lm_forward`), training (:mod:`._lm_training`) and token handling
(:mod:`._lm_tokens`) are private modules beside it.
"""

import json
import logging
import math
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._lm_forward import head_inputs, predict_ids
from ._lm_loading import (
    DEFAULT_TARGET_MODULES,
    HEAD_NAMES,
    adapter_config_dict,
    adapter_state_numpy,
    device_and_dtype,
    load_base,
    load_for_prediction,
    load_trainable,
    quiet_loading,
    saved_head_size,
)
from ._lm_tokens import encode, truncate_ids
from ._lm_training import (
    _RIDGE_ALPHAS,
    STANDARDISED_ALPHAS,
    cuda_devices,
    fit_ridge_head,
    fine_tune,
    validate_targets,
)
from .text import as_frame, as_texts, check_head_tail

__all__ = ["QwenRegressor", "fit_ridge_head", "truncate_ids", "LAYOUT_FILE", "POOLINGS"]

logger = logging.getLogger(__name__)

#: Poolings of the hidden states a head can read.
POOLINGS = ("last", "mean", "last+mean")
#: File beside peft's in a saved adapter: what its head reads.
LAYOUT_FILE = "qwen_regressor.json"

class QwenRegressor(RegressorMixin, BaseEstimator):
    """Score texts with a decoder LM's regression head, fine-tuned with LoRA.

    The base model is loaded with
    ``AutoModelForSequenceClassification.from_pretrained(...,
    problem_type="regression")`` from a hub name, a local folder or a GGUF
    file, with an optional peft LoRA adapter on top. By default the head
    reads the last token of each text in the last layer (the model's own
    sequence-classification head) and outputs one score per filter
    dimension; `pooling` and `layers` make it read mean-pooled states
    and/or other layers instead (a linear head over their concatenation).

    ``fit`` fine-tunes a LoRA adapter and the head (saved together through
    peft's ``modules_to_save``). The head is first fitted by ridge
    regression on the base model's features (a linear probe, so
    fine-tuning starts from a sensible head), then trained with the
    adapter; with ``max_epochs=0`` the ridge head is all there is (the
    LoRA matrices stay zero, so the base model is frozen); the loss is the mean squared error with each dimension divided
    by its variance, so all dimensions count alike. Targets are not
    rescaled: the adapter's head outputs the scores themselves, so a saved
    adapter predicts the same in plain peft.

    An estimator given an `adapter` is fitted as it is: it predicts without
    ``fit`` and can go into a router as is or wrapped in
    :class:`sklearn.frozen.FrozenEstimator`; ``fit`` on it continues
    training that adapter. Model weights are never pickled: after ``fit``
    the adapter's weights are kept as numpy arrays in `adapter_state_` and
    the base model is reloaded on first use after unpickling.

    Parameters
    ----------
    model_name_or_path : str or path-like, default="Qwen/Qwen2.5-1.5B"
        Hub name or local folder of the base model (any checkpoint
        ``AutoModelForSequenceClassification`` loads), or the folder holding
        `gguf_file`.
    adapter : str, path-like or None, default=None
        Folder of a peft LoRA adapter trained with this base model (for
        instance one written by :meth:`save_adapter`).
    gguf_file : str or None, default=None
        GGUF file name inside `model_name_or_path` (needs the ``gguf``
        package); the weights are de-quantised once and kept, keyed by the
        file's sha256 (:func:`~hybrid_estimators.models.dequantized_gguf`).
    num_labels : int or None, default=None
        Number of scores per text. None infers it from ``Y`` in ``fit``, or
        from the head saved in `adapter`.
    max_length : int, default=512
        Most tokens the model sees per text, special tokens and the
        truncation marker included.
    head_tail : tuple of (int, int) or None, default=(256, 256)
        A text of more than ``head + tail`` tokens keeps its first `head`
        and last `tail` tokens with `truncation_marker` between them; where
        that exceeds `max_length`, the head gives up the difference. None
        keeps the first `max_length` tokens.
    truncation_marker : str, default=" [...] "
        Text whose tokens mark the cut in a head + tail truncation.
    batch_size : int, default=8
        Texts per forward pass; ``fit`` needs at least this many training
        rows.
    device : str or None, default=None
        Torch device; None picks CUDA when available, else the CPU.
    dtype : {"float32", "bfloat16", "float16", "auto"} or None, default=None
        Weights' precision; None picks bfloat16 on a CUDA device that
        supports it, else float32. "auto" also picks bfloat16 on a CPU
        that computes it natively (AMX-BF16 or AVX-512-BF16 in its flags),
        float32 on other CPUs, where bfloat16 is emulated and slower; the
        choice and its reason are logged once. Trainable weights stay
        float32 under autocast.
    lora_r : int, default=16
        Rank of the LoRA updates.
    lora_alpha : float, default=32
        LoRA scaling numerator (the update is scaled by
        ``lora_alpha / lora_r``).
    lora_dropout : float, default=0.05
        Dropout on the LoRA branch during training.
    target_modules : list of str, str or None, default=None
        Modules that get LoRA updates. None: the attention projections
        ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` for Qwen2, Qwen3,
        Llama, Mistral and Gemma, peft's defaults for other architectures.
    head_init : {"ridge", "random"}, default="ridge"
        How ``fit`` starts the head of a new adapter: a ridge regression on
        the base model's features, or transformers' random initialisation.
    learning_rate : float, default=2e-4
        AdamW's learning rate, decayed linearly to zero over `max_epochs`.
    max_epochs : int, default=3
        Passes over the training rows; 0 fits the head only.
    early_stopping : bool, default=True
        Hold out `validation_fraction` of the rows, score them after every
        epoch (and before the first) and keep the best weights; stop after
        `n_iter_no_change` epochs without improvement.
    validation_fraction : float, default=0.1
        Share of rows held out for early stopping (at least one row).
    n_iter_no_change : int, default=2
        Patience of early stopping, in epochs.
    random_state : int, RandomState instance or None, default=None
        Seed of the validation split, the batch order, the adapter's
        initialisation and dropout: an int makes ``fit`` reproducible.
    show_progress_bar : bool or None, default=None
        Show tqdm bars while fine-tuning and predicting; None shows them
        only for long work (fine-tuning, or 16 texts or more) when stderr
        is a terminal, so never in logs or cross-validation workers.
    pooling : {"last", "mean", "last+mean"}, default="last"
        How each hidden layer in `layers` is pooled over a text's tokens:
        the last real token's state, the mean over all its real tokens
        (padding excluded), or both concatenated. With "last" and
        ``layers=None`` the head is the model's own sequence-classification
        head (no bias, transformers' last-token pooling).
    layers : int, list of int, "all" or None, default=None
        Hidden states the head reads, as indices into transformers'
        ``hidden_states`` (0: the embeddings, ``num_hidden_layers``: the
        last layer after its final norm; negative indices count from the
        end, -1 being the last layer); several are concatenated in the
        given order (for each layer, its `pooling` parts). "all": every one
        of them. None: the last layer only. Any value but None, or a
        `pooling` other than "last", replaces the model's head with a
        linear layer with bias over the pooled features, fitted by
        :func:`fit_ridge_head` (ridge on standardised features, folded into
        the linear layer). An adapter saved with them records them in
        ``qwen_regressor.json`` and reloads only with the same values. The
        decoder layers after the last one read are dropped at loading:
        their computation never runs.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit`` (their cells are joined
        into one text, so ``predict`` takes texts in any form
        :func:`~hybrid_estimators.text.as_texts` accepts).
    num_labels_ : int
        Number of scores per text.
    adapter_config_ : dict
        The peft ``LoraConfig`` of the fitted adapter, as a dict.
    adapter_state_ : dict of str to ndarray
        The fitted adapter's weights (LoRA matrices and head), float32.
    n_epochs_ : int
        Epochs run.
    train_loss_curve_ : list of float
        Mean training loss of every epoch.
    validation_loss_curve_ : list of float
        Validation loss before training and after every epoch (empty
        without early stopping).
    best_validation_loss_ : float or None
        Validation loss of the kept weights.
    head_layout_ : dict
        What the fitted head reads: ``pooling``, ``layers`` (resolved
        non-negative indices), ``head`` ("model" for the model's own head,
        "pooled" for the linear head over pooled features) and
        ``n_features``.

    See Also
    --------
    sklearn.frozen.FrozenEstimator : Keeps a prefit regressor as is in a
        meta-estimator's ``fit``.
    hybrid_estimators.router.HybridRouterRegressor : Sends it the articles
        Stage 1 finds promising.
    hybrid_estimators.models.smollm2_gguf : A small offline base model.
    hybrid_estimators.teacher.teacher_scores : Its scores of every article,
        to teach Stage 1.

    Examples
    --------
    >>> from hybrid_estimators.datasets import make_articles
    >>> from hybrid_estimators.models import smollm2_gguf
    >>> from hybrid_estimators.qwen import QwenRegressor
    >>> X, Y = make_articles(40, random_state=0)
    >>> folder, gguf_file = smollm2_gguf()  # doctest: +SKIP
    >>> model = QwenRegressor(folder, gguf_file=gguf_file, head_tail=(64, 64),
    ...                       max_epochs=1, random_state=0)  # doctest: +SKIP
    >>> model.fit(X, Y).predict(X[:2]).shape  # doctest: +SKIP
    (2, 3)
    >>> model.save_adapter("adapter")  # doctest: +SKIP
    >>> QwenRegressor(folder, gguf_file=gguf_file, adapter="adapter").predict(X[:2])  # doctest: +SKIP
    """

    _parameter_constraints = {
        "model_name_or_path": [str, os.PathLike],
        "adapter": [str, os.PathLike, None],
        "gguf_file": [str, None],
        "num_labels": [Interval(Integral, 1, None, closed="left"), None],
        "max_length": [Interval(Integral, 1, None, closed="left")],
        "head_tail": [tuple, list, None],
        "truncation_marker": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, None],
        "dtype": [StrOptions({"float32", "bfloat16", "float16", "auto"}), None],
        "lora_r": [Interval(Integral, 1, None, closed="left")],
        "lora_alpha": [Interval(Real, 0, None, closed="neither")],
        "lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "target_modules": [list, tuple, str, None],
        "head_init": [StrOptions({"ridge", "random"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "show_progress_bar": ["boolean", None],
        "pooling": [StrOptions(set(POOLINGS))],
        "layers": [Integral, list, tuple, StrOptions({"all"}), None],
    }

    def __init__(
        self,
        model_name_or_path="Qwen/Qwen2.5-1.5B",
        *,
        adapter=None,
        gguf_file=None,
        num_labels=None,
        max_length=512,
        head_tail=(256, 256),
        truncation_marker=" [...] ",
        batch_size=8,
        device=None,
        dtype=None,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=None,
        head_init="ridge",
        learning_rate=2e-4,
        max_epochs=3,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=2,
        random_state=None,
        show_progress_bar=None,
        pooling="last",
        layers=None,
    ):
        self.model_name_or_path = model_name_or_path
        self.adapter = adapter
        self.gguf_file = gguf_file
        self.num_labels = num_labels
        self.max_length = max_length
        self.head_tail = head_tail
        self.truncation_marker = truncation_marker
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.target_modules = target_modules
        self.head_init = head_init
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.show_progress_bar = show_progress_bar
        self.pooling = pooling
        self.layers = layers

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune a LoRA adapter and the regression head on `X`, `y`.

        Parameters
        ----------
        X : DataFrame, list of dict, 1-D sequence of str or 2-D array
            Articles (``title``/``content``) or texts, as
            :func:`hybrid_estimators.text.as_texts` accepts them.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Scores.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        import torch

        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        texts = as_texts(X)
        self.n_features_in_ = as_frame(X).shape[1]
        Y = validate_targets(y, X, len(texts))
        self._check_truncation()
        self._check_layers()
        num_labels = self._check_num_labels(Y.shape[1])
        train, validation = self._split_rows(len(texts))
        rng = check_random_state(self.random_state)
        order_rng = np.random.RandomState(rng.randint(np.iinfo(np.int32).max))
        seed = int(rng.randint(np.iinfo(np.int32).max))

        with torch.random.fork_rng(devices=cuda_devices()):
            torch.manual_seed(seed)
            with quiet_loading(self.show_progress_bar):
                model, tokenizer = load_trainable(self, num_labels)
            ids = self._encode(texts, tokenizer)
            model = fine_tune(self, model, tokenizer, ids, Y, train, validation, order_rng)

        model.eval()
        self.num_labels_ = num_labels
        self.adapter_config_ = adapter_config_dict(model)
        self.adapter_state_ = adapter_state_numpy(model)
        self.head_layout_ = self._head_layout(model.config)
        self._model, self._tokenizer = model, tokenizer
        self._model_key = self._load_key()
        return self

    def predict(self, X):
        """Predict the scores of `X`.

        Parameters
        ----------
        X : DataFrame, list of dict, 1-D sequence of str or 2-D array
            Articles or texts, as in ``fit``.

        Returns
        -------
        Y : ndarray of shape (n_samples,) or (n_samples, num_labels)
            Scores; 1-D when the model has one label.
        """
        check_is_fitted(self)
        texts = as_texts(X)
        self._check_truncation()
        self._check_layers()
        model, tokenizer = self._loaded()
        Y = predict_ids(self, model, tokenizer, self._encode(texts, tokenizer))
        return Y.ravel() if Y.shape[1] == 1 else Y

    def hidden_features(self, X):
        """The features the head reads for every text of `X`.

        The pooled hidden states selected by `pooling` and `layers`,
        concatenated (for each layer in order, its "last" then "mean"
        parts). A fitted estimator (or one given an `adapter`) computes
        them through its adapter; an unfitted one through the frozen base
        model, which is what a head fitted with ``max_epochs=0`` reads: so
        ``fit_ridge_head(hidden_features(X), Y)`` is that head's fit.

        Parameters
        ----------
        X : DataFrame, list of dict, 1-D sequence of str or 2-D array
            Articles or texts, as in ``fit``.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features)
            float64; ``n_features`` is the hidden size times the number of
            layers times the number of poolings.
        """
        texts = as_texts(X)
        self._check_truncation()
        self._check_layers()
        if self.__sklearn_is_fitted__():
            model, tokenizer = self._loaded()
        else:
            key = ("frozen base",) + self._load_key()
            if getattr(self, "_model_key", None) != key:
                with quiet_loading(self.show_progress_bar):
                    self._model, self._tokenizer = load_base(self, self.num_labels or 1)
                self._model.eval()
                self._model_key = key
            model, tokenizer = self._model, self._tokenizer
        return head_inputs(self, model, tokenizer, self._encode(texts, tokenizer))

    def save_adapter(self, path):
        """Write the adapter (LoRA weights and head) as a standard peft folder.

        ``QwenRegressor(model_name_or_path, adapter=path)`` and (with the
        default `pooling` and `layers`) ``peft.PeftModel.from_pretrained(
        base_model, path)`` both reload it. ``qwen_regressor.json`` beside
        peft's files records what the head reads (`pooling`, `layers`);
        reloading with other values is refused.

        Parameters
        ----------
        path : str or path-like
            Folder to write (``adapter_config.json``,
            ``adapter_model.safetensors``, ``qwen_regressor.json``).

        Returns
        -------
        path : Path
        """
        check_is_fitted(self)
        model, _ = self._loaded()
        path = Path(path)
        model.save_pretrained(path)
        layout = self._head_layout(model.config)
        (path / LAYOUT_FILE).write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")
        logger.info("Saved the adapter to %s", path)
        return path

    def __sklearn_is_fitted__(self):
        return hasattr(self, "adapter_state_") or self.adapter is not None

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("_model", "_tokenizer", "_model_key"):
            state.pop(name, None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.regressor_tags.poor_score = True
        return tags

    # --- validation ----------------------------------------------------------

    def _check_truncation(self):
        check_head_tail(self.head_tail)

    def _check_layers(self):
        """Type check of `layers` (its range needs the model's config)."""
        if self.layers is None or isinstance(self.layers, str):
            return
        layers = [self.layers] if isinstance(self.layers, Integral) else list(self.layers)
        if not layers or any(
            isinstance(layer, bool) or not isinstance(layer, Integral) for layer in layers
        ):
            raise ValueError(
                "layers must be an int, a non-empty list of ints, 'all' or None; "
                f"got {self.layers!r}."
            )

    def _resolved_layers(self, config):
        """`layers` as non-negative indices into ``hidden_states``."""
        n_layers = config.num_hidden_layers
        if self.layers is None:
            return [n_layers]
        if isinstance(self.layers, str):
            return list(range(n_layers + 1))
        self._check_layers()
        layers = [self.layers] if isinstance(self.layers, Integral) else list(self.layers)
        if any(not -(n_layers + 1) <= layer <= n_layers for layer in layers):
            raise ValueError(
                f"layers={self.layers!r}: the model has {n_layers} layers, so hidden "
                f"states are indexed {-(n_layers + 1)}..{n_layers} (0: the embeddings, "
                f"{n_layers} or -1: the last layer)."
            )
        resolved = [int(layer) % (n_layers + 1) for layer in layers]
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"layers={self.layers!r} names a layer twice.")
        return resolved

    def _own_head(self):
        """True where the head is the model's own (last token of the last layer)."""
        return self.pooling == "last" and self.layers is None

    def _head_layout(self, config):
        layers = self._resolved_layers(config)
        return {
            "pooling": self.pooling,
            "layers": layers,
            "head": "model" if self._own_head() else "pooled",
            "n_features": config.hidden_size * len(layers) * len(self.pooling.split("+")),
        }

    def _check_saved_layout(self, config):
        """Refuse an adapter folder whose head reads other features than asked."""
        path = Path(self.adapter) / LAYOUT_FILE
        saved = (
            json.loads(path.read_text(encoding="utf-8"))
            if path.exists()
            else {"pooling": "last", "layers": [config.num_hidden_layers], "head": "model"}
        )
        expected = self._head_layout(config)
        keys = ("pooling", "layers", "head")
        if any(saved.get(key) != expected[key] for key in keys):
            def show(layout):
                return ", ".join(f"{key}={layout.get(key)!r}" for key in keys)

            raise ValueError(
                f"adapter {str(self.adapter)!r} was saved with {show(saved)} but this "
                f"estimator has {show(expected)} (pooling={self.pooling!r}, "
                f"layers={self.layers!r}): pass the adapter's pooling and layers."
            )

    def _check_num_labels(self, n_targets):
        expected = self.num_labels
        if self.adapter is not None:
            expected = self._adapter_num_labels()
        if expected is not None and expected != n_targets:
            source = "the adapter's head" if self.adapter is not None else "num_labels"
            raise ValueError(
                f"y has {n_targets} column(s) but {source} gives {expected} labels."
            )
        return n_targets

    def _adapter_num_labels(self):
        saved = saved_head_size(self.adapter)
        if saved is None and self.num_labels is None:
            raise ValueError(
                f"Cannot tell the number of labels of adapter {str(self.adapter)!r}: "
                "its weights hold no 'score' or 'classifier' head; pass num_labels."
            )
        if saved is not None and self.num_labels not in (None, saved):
            raise ValueError(
                f"num_labels={self.num_labels} but the head saved in adapter "
                f"{str(self.adapter)!r} has {saved} labels."
            )
        return saved if saved is not None else self.num_labels

    def _split_rows(self, n_samples):
        n_validation = (
            max(1, math.ceil(self.validation_fraction * n_samples))
            if self.early_stopping and self.max_epochs > 0
            else 0
        )
        n_train = n_samples - n_validation
        if n_train < self.batch_size:
            held_out = (
                f", {n_validation} held out for early stopping" if n_validation else ""
            )
            raise ValueError(
                f"X has {n_samples} sample(s){held_out}: {n_train} left to train on, "
                f"fewer than batch_size={self.batch_size}. Give more rows or lower "
                "batch_size (or validation_fraction)."
            )
        rng = check_random_state(self.random_state)
        permutation = rng.permutation(n_samples)
        return np.sort(permutation[n_validation:]), np.sort(permutation[:n_validation])

    # --- loading and tokens --------------------------------------------------

    def _load_key(self):
        return (
            str(self.model_name_or_path),
            self.gguf_file,
            None if self.adapter is None else str(self.adapter),
            self.device,
            self.dtype,
            self.pooling,
            repr(self.layers),
        )

    def _loaded(self):
        """The model ready to predict, loaded on first use (and after unpickling)."""
        if getattr(self, "_model_key", None) != self._load_key():
            with quiet_loading(self.show_progress_bar):
                self._model, self._tokenizer = load_for_prediction(self)
            self._model_key = self._load_key()
        return self._model, self._tokenizer

    def _device_and_dtype(self):
        return device_and_dtype(self.device, self.dtype)

    def _encode(self, texts, tokenizer):
        return encode(self, texts, tokenizer)
