"""scalelab: language-model scaling-law studies as one Snakemake workflow."""

from .version import __version__  # noqa: F401

__all__ = ["Curves", "FittedLaw", "Study", "ScalelabError", "load_curves", "load_fit", "load_study"]


def __getattr__(name):
    # Lazy, so that `import scalelab` (and every `scalelab <stage>`) stays light.
    if name in ("Study", "load_study"):
        from .laws import study_results as study

        return getattr(study, name)
    if name in ("FittedLaw", "load_fit"):
        from .laws import fitted

        return getattr(fitted, name)
    if name in ("Curves", "load_curves"):
        from . import curves

        return getattr(curves, name)
    if name == "ScalelabError":
        from .errors import ScalelabError

        return ScalelabError
    raise AttributeError(f"module 'scalelab' has no attribute {name!r}")
