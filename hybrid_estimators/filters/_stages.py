"""How a filter's stages are built from its spec and read back from a
router: the Stage 1 pipeline (``ArticleText`` + ``E5Embedder`` + probe) and
what it reads of an article.
"""

from sklearn.pipeline import Pipeline

from ..embedding import E5Embedder
from ..router import unwrap_frozen
from ..text import ArticleText
from ._safe_io import FilterError

def _stage1_parts(router):
    """The ArticleText, embedder and probe of a router's Stage 1 pipeline."""
    stage1 = getattr(router, "stage1_", router.stage1)
    stage1 = unwrap_frozen(stage1)
    if (
        not isinstance(stage1, Pipeline)
        or len(stage1.steps) != 3
        or not isinstance(stage1.steps[0][1], ArticleText)
        or not isinstance(stage1.steps[1][1], E5Embedder)
    ):
        raise FilterError(
            "save_filter needs a router whose Stage 1 is a Pipeline of ArticleText, "
            "E5Embedder and a probe, e.g. make_pipeline(ArticleText(), E5Embedder(), make_probe())."
        )
    return tuple(step for _, step in stage1.steps)


def embedding_head_tail(article_text, embedder):
    """Stage 1's head+tail truncation as a config records it (None: head only).

    A filter's config can only say "head and tail counted in the embedding
    model's tokens", so an ArticleText that truncates must count them with
    that model's tokenizer and use the default marker and fields.
    """
    if article_text.head_tail is None:
        return None
    defaults = ArticleText().get_params()
    expected = {key: defaults[key] for key in ("text_columns", "separator", "truncation_marker")}
    expected["tokenizer"] = str(embedder.model_name_or_path)
    differs = {key: getattr(article_text, key) for key, value in expected.items()
               if getattr(article_text, key) != value}
    if differs:
        raise FilterError(
            f"Stage 1's ArticleText(head_tail={article_text.head_tail!r}) cannot be written in a "
            f"config: it must count the embedding model's tokens with the default fields and "
            f"marker ({expected}); it differs in {differs}."
        )
    return [int(n) for n in article_text.head_tail]


def stage1_article_text(spec):
    """The ArticleText of a filter's Stage 1, from its config (unfitted)."""
    hybrid = spec.hybrid_inference
    if hybrid["embedding_head_tail"] is None:
        return ArticleText()
    return ArticleText(head_tail=tuple(hybrid["embedding_head_tail"]), tokenizer=hybrid["embedding_model"])


def stage1_pipeline(spec, probe, **embedder_options):
    """A filter's Stage 1 from its config: ArticleText, E5Embedder and `probe` (unfitted).

    The embedder reads the config's model, prefix and token budget;
    `embedder_options` set its other parameters (``backend``, ``cache``,
    ``batch_size``, ...).
    """
    hybrid = spec.hybrid_inference
    embedder = E5Embedder(
        hybrid["embedding_model"],
        prefix=hybrid["embedding_prefix"],
        max_seq_length=hybrid["max_seq_length"],
        **embedder_options,
    )
    return Pipeline([("articletext", stage1_article_text(spec)), ("e5embedder", embedder), ("probe", probe)])


def _router_threshold(router):
    threshold = getattr(router, "threshold_", None)
    return float(router.threshold if threshold is None else threshold)


def _stage2_of(router):
    """The router's (fitted) Stage 2, unwrapped from a FrozenEstimator, or None."""
    stage2 = getattr(router, "stage2_", getattr(router, "stage2", None))
    return unwrap_frozen(stage2)


def embedding_budget(spec):
    """What Stage 1 reads of an article: ``{"max_seq_length", "head_tail"}`` of the config."""
    hybrid = spec.hybrid_inference
    return {"max_seq_length": hybrid["max_seq_length"], "head_tail": hybrid["embedding_head_tail"]}
