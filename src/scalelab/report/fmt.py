"""How the report writes numbers and words: the one place that decides `1.234e15`, `250K`,
`[0.28, 0.32]`, `1.25 %`, axis labels and tidy sentences. Standard library only."""

from __future__ import annotations

import math

STATUSES = ("ok", "diverged", "failed", "missing")  # a run's status, in the order they are counted
PREDICTED = "predicted"  # not trained: the curve law's endpoint (config grid.trained_cooldowns)


def counted_statuses(counts) -> tuple[str, ...]:
    """STATUSES, and `predicted` where a study has predicted endpoints (counted apart from the runs trained)."""
    return STATUSES + ((PREDICTED,) if counts.get(PREDICTED, 0) else ())


LABELS = {
    "params": "non-embedding parameters N",
    "params_total": "parameters N (incl. embeddings)",
    "tokens": "training tokens D",
    "flops": "training compute C (FLOPs)",
    "flops_total": "training compute C (FLOPs, incl. embeddings)",
    "val_loss": "validation loss (nats/token)",
    "train_loss": "training loss (nats/token)",
    "test_loss": "test loss (nats/token)",
    "test_bpb": "test bits per byte",
    "test_ppl": "test perplexity",
}


def finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, digits: int = 4) -> str:
    """4 significant digits; scientific (1.234e15) outside [1e-3, 1e4)."""
    if not finite(x):
        return "–"
    x = float(x)
    if x == 0 or 1e-3 <= abs(x) < 10**digits:
        return f"{x:.{digits}g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def human(x, digits: int = 3) -> str:
    """A count the way the config writes it: 250K, 1.2M, 3G."""
    if not finite(x):
        return "–"
    x = float(x)
    if abs(x) >= 1e15:
        return f"{x:.{digits}g}".replace("e+", "e")
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{unit}"
    return f"{x:.{digits}g}"


def count(x) -> str:
    """A count from fit.json in a table: 4 significant digits, e.g. 74.94K."""
    return human(x, 4)


def short(x) -> str:
    """A tick label for a log axis: 2e13, 1e14 (FLOPs) rather than mathtext powers."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def sci(x) -> str:
    """A compute budget in a legend: 1e11, 2.5e11."""
    mantissa, exponent = f"{float(x):.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def percent(x) -> str:
    return f"{100 * float(x):.2f} %" if finite(x) else "–"


def interval(pair, show=num) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(finite(v) for v in pair):
        return "–"
    return f"[{show(pair[0])}, {show(pair[1])}]"


def label(column: str) -> str:
    return LABELS.get(column, column)


def clause(text: str) -> str:
    """A reason to go after a colon or in brackets: as written, without its full stop."""
    return " ".join(str(text).split()).rstrip(".")


def sentence(text: str) -> str:
    """One tidy sentence: single spaces, a capital first letter, a full stop."""
    text = " ".join(str(text).split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def is_number(text: str) -> bool:
    """Numbers as this package shows them (0.3, 1.2e13, 250K, [a, b], 1.2 %), for right alignment."""
    return any(ch.isdigit() for ch in text) and not any(ch.isalpha() and ch not in "eKMGT" for ch in text)
