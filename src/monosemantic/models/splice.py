"""Replacing a site's activations during a forward pass (splicing, ablation, steering).

``with splice(lm, "blocks.6.resid_post", fn): lm.model(ids)`` runs the model with the site's
activation ``acts_BSD`` replaced by ``fn(acts_BSD)``. Several sites can be spliced at once by
nesting. The hooks are removed on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor

from .capture import _first_tensor

Edit = Callable[[Tensor], Tensor]


def _replace_first(value, new: Tensor):
    if isinstance(value, tuple):
        return (new, *value[1:])
    if isinstance(value, list):
        return [new, *value[1:]]
    return new


@contextmanager
def splice(lm, site: str, fn: Edit) -> Iterator[None]:
    """Within the block, the activation at ``site`` is ``fn(activation)`` (same shape and dtype)."""
    resolved = lm.site(site)
    module = lm.model.get_submodule(resolved.module)

    def checked(acts_BSD: Tensor) -> Tensor:
        new = fn(acts_BSD)
        if new.shape != acts_BSD.shape:
            raise ValueError(f"splice at {site}: replacement has shape {tuple(new.shape)}, "
                             f"expected {tuple(acts_BSD.shape)}")
        return new.to(acts_BSD.dtype)

    if resolved.point == "output":
        def hook(_m, _args, out):
            return _replace_first(out, checked(_first_tensor(out)))
        handle = module.register_forward_hook(hook)
    else:
        def pre_hook(_m, args, kwargs):
            if args:
                return (checked(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": checked(kwargs["hidden_states"])}
        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
