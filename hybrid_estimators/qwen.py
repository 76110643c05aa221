"""Stage 2: :class:`QwenRegressor`, a decoder LM with a regression head and LoRA."""

import contextlib
import functools
import json
import logging
import math
import os
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._progress import progress_enabled
from .models import resolve_device, resolve_stage2_base
from .text import as_frame, as_texts, check_head_tail, special_tokens_around

logger = logging.getLogger(__name__)

#: LoRA target modules by ``config.model_type``; other architectures get
#: peft's defaults for their type.
DEFAULT_TARGET_MODULES = {
    model_type: ["q_proj", "k_proj", "v_proj", "o_proj"]
    for model_type in ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2")
}
#: Attribute names of the regression head in transformers' sequence classifiers.
HEAD_NAMES = ("score", "classifier")
#: Texts that make a Stage 2 pass long enough for a progress bar (see `show_progress_bar`).
_LONG_STAGE2_WORK = 16
_RIDGE_ALPHAS = np.logspace(-3, 4, 15)
#: Penalties :func:`fit_ridge_head` tries (on standardised features).
STANDARDISED_ALPHAS = np.logspace(-1, 6, 22)
#: Poolings of the hidden states a head can read.
POOLINGS = ("last", "mean", "last+mean")
#: File beside peft's in a saved adapter: what its head reads.
LAYOUT_FILE = "qwen_regressor.json"
_GRADIENT_CLIP_NORM = 1.0


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
        package); the weights are de-quantised on loading.
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
    dtype : {"float32", "bfloat16", "float16"} or None, default=None
        Weights' precision; None picks bfloat16 on a CUDA device that
        supports it, else float32. Trainable weights stay float32 under
        autocast.
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
        ``qwen_regressor.json`` and reloads only with the same values.

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
        "dtype": [StrOptions({"float32", "bfloat16", "float16"}), None],
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
        Y = _validate_targets(y, X, len(texts))
        self._check_truncation()
        self._check_layers()
        num_labels = self._check_num_labels(Y.shape[1])
        train, validation = self._split_rows(len(texts))
        rng = check_random_state(self.random_state)
        order_rng = np.random.RandomState(rng.randint(np.iinfo(np.int32).max))
        seed = int(rng.randint(np.iinfo(np.int32).max))

        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(seed)
            with _quiet_loading(self.show_progress_bar):
                model, tokenizer = self._load_trainable(num_labels)
            ids = self._encode(texts, tokenizer)
            model = self._train(model, tokenizer, ids, Y, train, validation, order_rng)

        model.eval()
        self.num_labels_ = num_labels
        self.adapter_config_ = _adapter_config_dict(model)
        self.adapter_state_ = _adapter_state_numpy(model)
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
        Y = self._predict_ids(model, tokenizer, self._encode(texts, tokenizer))
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
                with _quiet_loading(self.show_progress_bar):
                    self._model, self._tokenizer = self._load_base(self.num_labels or 1)
                self._model.eval()
                self._model_key = key
            model, tokenizer = self._model, self._tokenizer
        return self._head_inputs(model, tokenizer, self._encode(texts, tokenizer))

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
        saved = _saved_head_size(self.adapter)
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

    # --- loading -------------------------------------------------------------

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
            with _quiet_loading(self.show_progress_bar):
                self._model, self._tokenizer = self._load_for_prediction()
            self._model_key = self._load_key()
        return self._model, self._tokenizer

    def _load_for_prediction(self):
        from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict

        if hasattr(self, "adapter_state_"):
            model, tokenizer = self._load_base(self.num_labels_)
            fitted = getattr(self, "head_layout_", None)
            if fitted is not None and fitted != self._head_layout(model.config):
                raise ValueError(
                    f"This estimator was fitted with pooling={fitted['pooling']!r}, "
                    f"layers={fitted['layers']!r}; its pooling or layers changed "
                    "since: fit it again."
                )
            config = PeftConfig.from_peft_type(**self.adapter_config_)
            model = get_peft_model(model, config)
            set_peft_model_state_dict(model, _state_tensors(self.adapter_state_))
        else:
            model, tokenizer = self._load_base(self._adapter_num_labels())
            self._check_saved_layout(model.config)
            model = PeftModel.from_pretrained(model, str(self.adapter))
        return model.eval(), tokenizer

    def _load_trainable(self, num_labels):
        from peft import LoraConfig, PeftModel, TaskType, get_peft_model

        model, tokenizer = self._load_base(num_labels)
        if self.adapter is not None:
            self._check_saved_layout(model.config)
            model = PeftModel.from_pretrained(model, str(self.adapter), is_trainable=True)
        else:
            config = LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                target_modules=self._target_modules(model),
                modules_to_save=[_head_name(model)],
            )
            model = get_peft_model(model, config)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        return model, tokenizer

    def _target_modules(self, model):
        if self.target_modules is not None:
            return (
                self.target_modules
                if isinstance(self.target_modules, str)
                else list(self.target_modules)
            )
        return DEFAULT_TARGET_MODULES.get(model.config.model_type)

    def _load_base(self, num_labels):
        from transformers import AutoModelForSequenceClassification

        device, dtype = self._device_and_dtype()
        kwargs = {
            "num_labels": num_labels,
            "problem_type": "regression",
            "dtype": dtype,
            # A checkpoint's own head of another size is replaced, not an error.
            "ignore_mismatched_sizes": True,
        }
        if self.gguf_file is not None:
            kwargs["gguf_file"] = self.gguf_file
        logger.info(
            "Loading %s%s (%s on %s)",
            self.model_name_or_path,
            f" / {self.gguf_file}" if self.gguf_file else "",
            dtype,
            device,
        )
        source = resolve_stage2_base(self.model_name_or_path, self.gguf_file)
        tokenizer = _load_tokenizer(source, self.gguf_file)
        model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
        if not self._own_head():
            # A linear head with bias over the pooled features replaces the
            # model's own (which reads the last layer's last token only).
            import torch

            layout = self._head_layout(model.config)
            setattr(
                model,
                _head_name(model),
                torch.nn.Linear(layout["n_features"], num_labels, bias=True, dtype=dtype),
            )
        return model.to(device), tokenizer

    def _device_and_dtype(self):
        import torch

        device = torch.device(resolve_device(self.device))
        if self.dtype is not None:
            return device, getattr(torch, self.dtype)
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return device, torch.bfloat16
        return device, torch.float32

    # --- tokens --------------------------------------------------------------

    def _encode(self, texts, tokenizer):
        """Token ids of every text: truncated head + tail, special tokens added."""
        before, after = special_tokens_around(tokenizer)
        budget = self.max_length - len(before) - len(after)
        marker = tokenizer(self.truncation_marker, add_special_tokens=False)["input_ids"]
        if budget < 1 or (self.head_tail is not None and budget <= len(marker)):
            raise ValueError(
                f"max_length={self.max_length} leaves no room for text once the "
                f"{len(before) + len(after)} special and {len(marker)} marker tokens "
                "are counted."
            )
        encoded = tokenizer(
            texts, add_special_tokens=False, split_special_tokens=True, verbose=False
        )["input_ids"]
        empty = [i for i, ids in enumerate(encoded) if not ids and not before + after]
        if empty:
            raise ValueError(f"Rows {empty} give no tokens: the model cannot score them.")
        return [
            before + truncate_ids(ids, budget, self.head_tail, marker) + after
            for ids in encoded
        ]

    # --- prediction ----------------------------------------------------------

    def _predict_ids(self, model, tokenizer, ids, *, desc="predicting"):
        """Forward passes over length-sorted batches, in the original order."""
        import torch

        num_labels = model.config.num_labels
        Y = np.empty((len(ids), num_labels), dtype=np.float64)
        order = np.argsort([len(row) for row in ids], kind="stable")
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        device, dtype = self._device_and_dtype()
        with torch.inference_mode(), _autocast(device, dtype):
            shown = progress_enabled(self.show_progress_bar, len(ids), _LONG_STAGE2_WORK)
            for batch in tqdm(batches, desc=desc, disable=not shown):
                inputs = _collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
                Y[batch] = self._logits(model, inputs).float().cpu().numpy()
        return Y

    # --- training ------------------------------------------------------------

    def _train(self, model, tokenizer, ids, Y, train, validation, rng):
        import torch

        device, dtype = self._device_and_dtype()
        if self.adapter is None and self.head_init == "ridge":
            self._fit_head_by_ridge(model, tokenizer, [ids[i] for i in train], Y[train])
        weights = torch.as_tensor(_inverse_variances(Y[train]), device=device)
        targets = torch.as_tensor(Y, dtype=torch.float32, device=device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate)
        n_steps = max(1, self.max_epochs * math.ceil(len(train) / self.batch_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - step / n_steps)
        )

        def validation_loss():
            model.eval()
            predicted = self._predict_ids(
                model, tokenizer, [ids[i] for i in validation], desc="validating"
            )
            return _weighted_mse(predicted, Y[validation], weights.cpu().numpy())

        self.train_loss_curve_, self.validation_loss_curve_ = [], []
        best_state, best_loss, n_stale = None, None, 0
        if len(validation):
            best_loss = validation_loss()
            best_state = _trainable_copy(model)
            self.validation_loss_curve_.append(best_loss)
        progress = tqdm(
            total=n_steps if self.max_epochs else 0,
            desc="fine-tuning",
            disable=not progress_enabled(self.show_progress_bar, n_steps, 1),
        )
        self.n_epochs_ = 0
        for epoch in range(self.max_epochs):
            model.train()
            losses = []
            for batch in _chunks(rng.permutation(train), self.batch_size):
                inputs = _collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
                with _autocast(device, dtype):
                    predicted = self._logits(model, inputs).float()
                loss = (((predicted - targets[batch]) ** 2) * weights).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, _GRADIENT_CLIP_NORM)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                progress.update()
            self.n_epochs_ = epoch + 1
            self.train_loss_curve_.append(float(np.mean(losses)))
            if not len(validation):
                logger.info("epoch %d: train loss %.4f", epoch + 1, losses[-1])
                continue
            loss = validation_loss()
            self.validation_loss_curve_.append(loss)
            logger.info(
                "epoch %d: train loss %.4f, validation loss %.4f",
                epoch + 1,
                self.train_loss_curve_[-1],
                loss,
            )
            if loss < best_loss:
                best_loss, best_state, n_stale = loss, _trainable_copy(model), 0
            else:
                n_stale += 1
                if n_stale >= self.n_iter_no_change:
                    logger.info("early stopping after epoch %d", epoch + 1)
                    break
        progress.close()
        if best_state is not None:
            _restore_trainable(model, best_state)
        self.best_validation_loss_ = best_loss
        return model

    def _fit_head_by_ridge(self, model, tokenizer, ids, Y):
        """Start the head from a ridge regression on the base model's features."""
        import torch
        from sklearn.linear_model import RidgeCV

        head = _head_module(model)
        if not isinstance(head, torch.nn.Linear):
            logger.info("head_init='ridge' skipped: the head is not one linear layer")
            return
        features = self._head_inputs(model, tokenizer, ids)
        if self._own_head():
            ridge = RidgeCV(alphas=_RIDGE_ALPHAS, fit_intercept=False).fit(features, Y)
            weight, bias, alpha = ridge.coef_.reshape(head.weight.shape), 0.0, ridge.alpha_
        else:
            weight, bias, alpha = fit_ridge_head(features, Y)
        logger.info("head fitted by ridge regression (alpha=%g)", alpha)
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(weight.reshape(head.weight.shape)))
            if head.bias is not None:
                head.bias.copy_(torch.as_tensor(np.broadcast_to(bias, head.bias.shape).copy()))

    def _logits(self, model, inputs):
        """The head's output for a collated batch."""
        if self._own_head():
            return model(**inputs).logits
        return _head_module(model, wrapper=True)(self._pooled(model, inputs))

    def _pooled(self, model, inputs):
        """Pooled hidden states of `layers`, concatenated: (batch, n_features)."""
        import torch

        hf_model = _hf_model(model)
        backbone = getattr(hf_model, hf_model.base_model_prefix)
        layers = self._resolved_layers(hf_model.config)
        outputs = backbone(**inputs, output_hidden_states=True)
        mask = inputs["attention_mask"]
        last = mask.sum(dim=1) - 1
        rows = torch.arange(len(last), device=last.device)
        weights = mask.unsqueeze(-1).float()
        parts = []
        for layer in layers:
            hidden = outputs.hidden_states[layer]
            for pooling in self.pooling.split("+"):
                if pooling == "last":
                    parts.append(hidden[rows, last].float())
                else:
                    parts.append((hidden.float() * weights).sum(dim=1) / weights.sum(dim=1))
        return torch.cat(parts, dim=-1)

    def _head_inputs(self, model, tokenizer, ids):
        """What the head reads for every text, in length-sorted batches."""
        import torch

        device, dtype = self._device_and_dtype()
        order = np.argsort([len(row) for row in ids], kind="stable")
        features = None
        own_head = self._own_head()
        if own_head:  # transformers' head: capture the last layer it reads
            head = _head_module(model, wrapper=True)
            captured = []
            hook = head.register_forward_hook(
                lambda module, args, output: captured.append(args[0])
            )
        try:
            model.eval()
            with torch.inference_mode(), _autocast(device, dtype):
                for batch in tqdm(
                    _chunks(order, self.batch_size),
                    desc="features",
                    disable=not progress_enabled(self.show_progress_bar, len(ids), _LONG_STAGE2_WORK),
                ):
                    inputs = _collate([ids[i] for i in batch], tokenizer.pad_token_id, device)
                    if own_head:
                        captured.clear()
                        model(**inputs)
                        hidden = captured[0]
                        if hidden.ndim == 3:
                            last = inputs["attention_mask"].sum(dim=1) - 1
                            hidden = hidden[torch.arange(len(batch), device=device), last]
                    else:
                        hidden = self._pooled(model, inputs)
                    hidden = hidden.float().cpu().numpy()
                    if features is None:
                        features = np.empty((len(ids), hidden.shape[1]), dtype=np.float64)
                    features[batch] = hidden
        finally:
            if own_head:
                hook.remove()
        return features


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


@contextlib.contextmanager
def _quiet_loading(show_progress_bar):
    """Silence transformers' load report while a base model gets its head.

    The report always lists the regression head as "MISSING": it is created
    here on purpose, then fitted or restored from the adapter, so the warning
    would only mislead. Errors still raise; the GGUF conversion bar follows
    ``show_progress_bar``.
    """
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not show_progress_bar:
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # peft still asks for the renamed ``is_gradient_checkpointing``.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def truncate_ids(ids, budget, head_tail, marker):
    """Cut a token id list to at most `budget` ids, head + `marker` + tail.

    With `head_tail` ``(head, tail)``, a list longer than ``head + tail``
    keeps its first `head` and last `tail` ids around `marker`; where that
    exceeds `budget` the head gives up the difference (then the tail). With
    `head_tail` None, a list longer than `budget` keeps its start.

    Examples
    --------
    >>> truncate_ids(list(range(10)), 512, (3, 2), [-1])
    [0, 1, 2, -1, 8, 9]
    >>> truncate_ids(list(range(10)), 5, (3, 2), [-1])
    [0, 1, -1, 8, 9]
    >>> truncate_ids(list(range(10)), 5, None, [-1])
    [0, 1, 2, 3, 4]
    """
    if head_tail is None:
        return list(ids[:budget])
    head, tail = head_tail
    if len(ids) <= min(head + tail, budget):
        return list(ids)
    room = budget - len(marker)
    tail = min(tail, room)
    head = min(head, room - tail)
    return list(ids[:head]) + list(marker) + list(ids[len(ids) - tail :])


@functools.lru_cache(maxsize=8)
def _load_tokenizer(model_name_or_path, gguf_file):
    """The base model's tokenizer, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    kwargs = {} if gguf_file is None else {"gguf_file": gguf_file}
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer of {model_name_or_path!r} has neither a pad nor an "
                "eos token: batches cannot be padded."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _validate_targets(y, X, n_samples):
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


def _saved_head_size(adapter):
    """Number of labels of the head saved in a peft adapter folder, or None."""
    from safetensors import safe_open

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.exists():
        raise ValueError(f"adapter {str(adapter)!r} has no adapter_model.safetensors.")
    with safe_open(str(path), framework="pt") as weights:
        for key in weights.keys():
            parts = key.split(".")
            if parts[-1] == "weight" and (
                parts[-2] in HEAD_NAMES or parts[-3:-1] == ["classifier", "out_proj"]
            ):
                return int(weights.get_slice(key).get_shape()[0])
    return None


def _hf_model(model):
    """The transformers model under a peft wrapper (LoRA layers in place)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def _head_module(model, *, wrapper=False):
    """The regression head; peft's trainable copy of it unless `wrapper`."""
    hf_model = _hf_model(model)
    head = getattr(hf_model, _head_name(hf_model))
    if not wrapper and hasattr(head, "modules_to_save"):
        head = head.modules_to_save["default"]
    return head


def _head_name(model):
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return name
    raise ValueError(
        f"{type(model).__name__} has no regression head named {' or '.join(HEAD_NAMES)}."
    )


def _adapter_config_dict(model):
    config = model.peft_config["default"].to_dict()
    return {
        key: sorted(value) if isinstance(value, set) else value
        for key, value in config.items()
    }


def _adapter_state_numpy(model):
    from peft import get_peft_model_state_dict

    return {
        name: tensor.detach().float().cpu().numpy()
        for name, tensor in get_peft_model_state_dict(model).items()
    }


def _state_tensors(state):
    import torch

    return {name: torch.from_numpy(np.array(array)) for name, array in state.items()}


def _trainable_copy(model):
    return {
        name: parameter.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def _restore_trainable(model, state):
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def _collate(rows, pad_token_id, device):
    """Right-pad token id lists into ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.as_tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def _autocast(device, dtype):
    import torch

    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _cuda_devices():
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


def _chunks(indices, size):
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _inverse_variances(Y):
    variances = Y.var(axis=0)
    return np.where(variances > 1e-12, 1.0 / np.maximum(variances, 1e-12), 1.0).astype(
        np.float32
    )


def _weighted_mse(predicted, Y, weights):
    return float(np.mean(((predicted - Y) ** 2) * weights))
