"""The package's warning categories.

Quality warnings are :func:`warnings.warn` calls with these categories,
so that a user can filter them or turn them into errors, as with
scikit-learn's :mod:`sklearn.exceptions`::

    import warnings
    from hybrid_estimators.exceptions import FilterQualityWarning
    warnings.simplefilter("error", FilterQualityWarning)

Logging may repeat them; it never replaces them.
"""

__all__ = ["HybridEstimatorsWarning", "FilterQualityWarning", "InSampleWarning"]


class HybridEstimatorsWarning(UserWarning):
    """Base class of every warning this package issues.

    See Also
    --------
    FilterQualityWarning : A filter's numbers say little.
    InSampleWarning : A number measured on training articles.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", HybridEstimatorsWarning)  # silences every subclass
    ...     warnings.warn("routing scores without spread", FilterQualityWarning)
    >>> issubclass(InSampleWarning, HybridEstimatorsWarning)
    True
    """


class FilterQualityWarning(HybridEstimatorsWarning):
    """A filter's numbers say little: a probe no better than the mean, a
    routing score without spread, a Stage 2 no better than Stage 1, a
    calibration target not met, a run far from the filter's record.

    See Also
    --------
    HybridEstimatorsWarning : The base class of the package's warnings.
    InSampleWarning : Numbers measured on training articles.

    Examples
    --------
    >>> import warnings
    >>> from hybrid_estimators.exceptions import FilterQualityWarning
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("barely beats the mean", FilterQualityWarning)
    >>> caught[0].category.__name__
    'FilterQualityWarning'
    """


class InSampleWarning(HybridEstimatorsWarning):
    """A number was measured on articles a stage was trained on.

    See Also
    --------
    hybrid_estimators.evaluation.in_sample_articles : The training articles
        found among the ones measured.
    hybrid_estimators.evaluation.cascade_report : Leaves those articles out,
        with this warning.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", InSampleWarning)  # refuse in-sample numbers
    ...     warnings.warn("12 articles were trained on", InSampleWarning)
    Traceback (most recent call last):
    ...
    hybrid_estimators.exceptions.InSampleWarning: 12 articles were trained on
    """
