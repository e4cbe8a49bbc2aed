"""Reading several sites in one forward pass that stops as soon as the last one is read.

Stopping is done by raising from the hook that completes the set: the layers after the last
needed site, the final norm and the unembedding never run, whatever the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import MonosemanticError
from .sites import Site


class _AllCaptured(Exception):
    """Raised inside a hook to end the forward pass early."""


def _first_tensor(value) -> Tensor:
    # Blocks return a tensor in transformers 5 and a tuple (hidden, ...) in older versions.
    return value[0] if isinstance(value, (tuple, list)) else value


def capture(model: nn.Module, input_ids_BS: Tensor, sites: Sequence[Site], **forward_kwargs) -> dict[str, Tensor]:
    """Run ``model`` on ``input_ids_BS`` and return ``{site.name: acts_BSD}`` for every site.

    Each module's first call in the pass is the one recorded (a module reused within one pass,
    such as a shared rotary embedding, is read on its first use).
    """
    acts: dict[str, Tensor] = {}
    wanted = {s.name for s in sites}

    def record(site: Site, value) -> None:
        if site.name not in acts:
            acts[site.name] = _first_tensor(value).detach()
            if len(acts) == len(wanted):
                raise _AllCaptured

    handles = []
    for site in sites:
        module = model.get_submodule(site.module)
        if site.point == "input":
            def pre_hook(_m, args, kwargs, site=site):
                record(site, args[0] if args else kwargs["hidden_states"])
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(lambda _m, _a, out, site=site: record(site, out)))
    try:
        with torch.no_grad():
            model(input_ids=input_ids_BS, **{"use_cache": False, **forward_kwargs})
    except _AllCaptured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - acts.keys()
    if missing:
        raise MonosemanticError(f"sites {sorted(missing)} were never reached in the forward pass")
    return acts
