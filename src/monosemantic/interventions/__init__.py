"""Interventions: changing a model's activations along dictionary directions, and measuring the effect.

- :func:`steering` (context manager) adds ``multiple * W_dec[latent]`` at the latent's site;
  :func:`generate_steered` writes text under it.
- :func:`steering_curve` measures, per multiple, the probability the model puts on the latent's
  promoted tokens and how fluent it stays; :func:`plot_steering_curve` draws it.
- :func:`steer_prompt` continues one prompt clean and steered, with the curve beside it
  (``monosemantic steer``).
"""

from .evaluate import (
    SteeringCurve,
    SteeringPoint,
    decoder_promoted_tokens,
    plot_steering_curve,
    steering_curve,
)
from .prompt import SteeredPrompt, steer_prompt
from .steer import (
    check_latent,
    generate_ids,
    generate_steered,
    prompt_ids,
    steering,
    steering_vectors,
    typical_norm,
)

__all__ = ["SteeredPrompt", "SteeringCurve", "SteeringPoint", "check_latent", "decoder_promoted_tokens", "generate_ids",
           "generate_steered", "plot_steering_curve", "prompt_ids", "steer_prompt", "steering", "steering_curve",
           "steering_vectors", "typical_norm"]
