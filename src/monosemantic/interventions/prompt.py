"""One prompt continued clean and steered, with the steering curve beside it: what ``monosemantic steer`` shows.

The clean continuation is the same call at multiple 0, so the two differ only by the added
direction. With ``relative=True`` the multiples are fractions of the site's typical activation
norm, measured on the given windows; the curve (:func:`~.evaluate.steering_curve`) is measured
on the same windows, so a relative multiple means the same length in both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from ..errors import MonosemanticError
from ..evaluation.results import Result
from .evaluate import SteeringCurve, plot_steering_curve, steering_curve
from .steer import check_latent, generate_steered, steering_vectors, typical_norm


@dataclass(frozen=True)
class SteeredPrompt(Result):
    prompt: str  # the prompt as given
    latent: int  # the steered latent
    multiple: float  # the multiple of its decoder direction added
    norm: float | None  # the typical site norm multiples are relative to (None: plain multiples of W_dec)
    clean: str  # the unsteered continuation
    steered: str  # the continuation with the direction added
    curve: SteeringCurve | None  # promoted-token probability and fluency per multiple, when asked
    plot: str | None  # the PNG of the curve, when asked


def steer_prompt(lm, dictionary, latent: int, prompt: str, multiple: float = 8.0, *, max_new_tokens: int = 40,
                 greedy: bool = True, seed: int = 0, site: str | None = None, relative: bool = False,
                 curve: Sequence[float] | None = None, windows_WS: Tensor | None = None,
                 plot: str | os.PathLike | None = None, progress: bool = True) -> SteeredPrompt:
    """Continue ``prompt`` clean and with ``multiple`` times ``latent``'s direction added at its site.

    ``curve``: multiples at which to also measure :func:`steering_curve` on ``windows_WS``
    (``plot``: write it as a PNG there). ``relative``: multiples are fractions of the site's
    typical norm on ``windows_WS``. Both need ``windows_WS`` (held-out windows ``[W, S]``).
    """
    latent = check_latent(dictionary, latent)
    if (curve or relative) and windows_WS is None:
        raise MonosemanticError("a steering curve and relative multiples are measured on text; pass windows_WS "
                                "(held-out token windows [W, S])")
    if plot is not None and not curve:
        raise MonosemanticError("plot= (--plot) draws the steering curve; pass curve=[multiples] (--curve) too, "
                                "e.g. 0,2,4,8")
    norm = None
    if relative:
        assert windows_WS is not None  # checked above
        norm = typical_norm(lm, next(iter(steering_vectors(dictionary, latent, site=site))), windows_WS)
    options = {"max_new_tokens": max_new_tokens, "greedy": greedy, "seed": seed, "site": site, "norm": norm}
    clean = generate_steered(lm, dictionary, latent, 0.0, prompt, **options)
    steered = generate_steered(lm, dictionary, latent, multiple, prompt, **options)
    measured = None
    if curve:
        measured = steering_curve(lm, dictionary, latent, [float(m) for m in curve], windows_WS, site=site,
                                  norm=norm, progress=progress)
    drawn = None
    if plot is not None:
        assert measured is not None  # plot= needs curve=, checked above
        drawn = str(plot_steering_curve(measured, plot))
    return SteeredPrompt(prompt=prompt, latent=latent, multiple=float(multiple), norm=norm, clean=clean,
                         steered=steered, curve=measured, plot=drawn)
