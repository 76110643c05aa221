"""What every Display of the package shares: matplotlib's presence and its style keywords.

Imports nothing of the package (any module may use it).
"""


def check_matplotlib_support(caller):
    """Raise an ImportError naming `caller` when matplotlib is not installed.

    Parameters
    ----------
    caller : str
        What needs matplotlib, e.g. ``"CascadeFrontierDisplay.plot"``.

    Examples
    --------
    >>> check_matplotlib_support("CascadeFrontierDisplay.plot")
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"{caller} requires matplotlib: pip install 'hybrid_estimators[test]' "
            "or pip install matplotlib."
        ) from error


def validate_style_kwargs(default_style_kwargs, user_style_kwargs, artist=None):
    """The default style keywords overridden by the user's, aliases resolved.

    As scikit-learn's Displays do: a user's ``lw=3`` replaces a default
    ``linewidth``; giving an alias and its full name together (``c`` and
    ``color``) is a ``TypeError``. Aliases are matplotlib's own
    (:func:`matplotlib.cbook.normalize_kwargs`).

    Parameters
    ----------
    default_style_kwargs, user_style_kwargs : dict
    artist : matplotlib Artist class, default=None
        Whose aliases apply; :class:`~matplotlib.lines.Line2D` when None.

    Returns
    -------
    style_kwargs : dict

    Examples
    --------
    >>> validate_style_kwargs({"color": "C0", "linewidth": 1}, {"lw": 3})
    {'color': 'C0', 'linewidth': 3}
    >>> validate_style_kwargs({}, {"c": "red", "color": "blue"})
    Traceback (most recent call last):
    ...
    TypeError: Got both 'c' and 'color', which are aliases of one another
    """
    from matplotlib.cbook import normalize_kwargs
    from matplotlib.lines import Line2D

    artist = Line2D if artist is None else artist
    return {
        **normalize_kwargs(default_style_kwargs, artist),
        **normalize_kwargs(user_style_kwargs, artist),
    }
