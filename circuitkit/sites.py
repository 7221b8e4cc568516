"""Site names and computation order.

A *site* is a place in the model whose output we record. circuitkit uses one naming scheme for every
model it supports (HF causal LMs, Tracr-compiled models, the embedded toy LM):

===================  =====================================================================
name                 what is recorded
===================  =====================================================================
``embed``            token + positional embedding, i.e. what the first block reads
``L{l}.resid_pre``   the residual stream entering block ``l`` (``L0.resid_pre`` == ``embed``)
``L{l}.H{h}``        head ``h`` of block ``l``: its contribution to the residual stream,
                     ``z_h @ W_O[h]`` (+ ``b_O / n_heads``, so the heads sum to ``L{l}.attn``)
``L{l}.attn``        the attention block's output (sum over heads, with the output bias)
``L{l}.MLP``         the MLP's output
``L{l}.resid_post``  the residual stream leaving block ``l``
``out``              the model's output (logits; Tracr: the unembedding read)
===================  =====================================================================

Computation order (used to build the block upper-triangular CircuitLasso problem)::

    embed < L0.resid_pre < L0.H0 .. L0.H{n-1} < L0.attn < L0.MLP < L0.resid_post < L1.resid_pre < ... < out

Heads of one layer run in parallel: they share an order *rank* and never predict each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SiteKind = Literal["embed", "resid_pre", "head", "attn", "mlp", "resid_post", "out"]

_PATTERN = re.compile(r"^L(?P<layer>\d+)\.(?P<rest>H(?P<head>\d+)|attn|MLP|resid_pre|resid_post)$")
_KIND_RANK = {"resid_pre": 0, "head": 1, "attn": 2, "mlp": 3, "resid_post": 4}

VALID_FORMS = ("embed", "L{l}.H{h}", "L{l}.attn", "L{l}.MLP", "L{l}.resid_pre", "L{l}.resid_post", "out")

#: Kinds whose outputs are additive *components* of the residual stream (what CircuitLasso regresses).
COMPONENT_KINDS = ("embed", "head", "mlp", "out")


@dataclass(frozen=True, order=False)
class Site:
    """A parsed site name."""

    name: str
    kind: SiteKind
    layer: int | None = None
    head: int | None = None

    @property
    def rank(self) -> tuple[float, int]:
        """Computation-order rank. Sites with equal rank (heads of one layer) run in parallel."""
        if self.kind == "embed":
            return (-1.0, 0)
        if self.kind == "out":
            return (float("inf"), 0)
        return (float(self.layer), _KIND_RANK[self.kind])

    @property
    def sort_key(self) -> tuple[float, int, int]:
        return (*self.rank, self.head if self.head is not None else -1)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


def parse_site(name: str) -> Site:
    """Parse a site name; raise ``ValueError`` naming the valid forms if it is not one."""
    if not isinstance(name, str):
        raise ValueError(f"site names are strings, got {name!r} ({type(name).__name__})")
    if name == "embed":
        return Site(name, "embed")
    if name == "out":
        return Site(name, "out")
    m = _PATTERN.match(name)
    if m is None:
        raise ValueError(f"unknown site {name!r}; valid forms are {', '.join(VALID_FORMS)}")
    layer = int(m.group("layer"))
    rest = m.group("rest")
    if m.group("head") is not None:
        return Site(name, "head", layer, int(m.group("head")))
    kind = {"attn": "attn", "MLP": "mlp", "resid_pre": "resid_pre", "resid_post": "resid_post"}[rest]
    return Site(name, kind, layer)  # type: ignore[arg-type]


def sort_sites(names: Iterable[str]) -> list[str]:
    """Return site names in computation order (duplicates removed)."""
    parsed = {n: parse_site(n) for n in names}
    return sorted(parsed, key=lambda n: parsed[n].sort_key)


def precedes(u: str, v: str) -> bool:
    """True if site ``u`` is computed strictly before ``v`` (so ``u`` may predict ``v``)."""
    return parse_site(u).rank < parse_site(v).rank


def all_sites(n_layers: int, n_heads: int, *, kinds: Iterable[str] | None = None) -> list[str]:
    """Every site of a model with ``n_layers`` blocks of ``n_heads`` heads, in computation order.

    ``kinds`` restricts the result, e.g. ``kinds=COMPONENT_KINDS`` gives the CircuitLasso
    component sites ``embed, L0.H0.., L0.MLP, ..., out``.
    """
    if n_layers < 0 or n_heads < 0:
        raise ValueError(f"n_layers and n_heads must be >= 0, got {n_layers}, {n_heads}")
    keep = set(kinds) if kinds is not None else {"embed", "resid_pre", "head", "attn", "mlp", "resid_post", "out"}
    bad = keep - {"embed", "resid_pre", "head", "attn", "mlp", "resid_post", "out"}
    if bad:
        raise ValueError(f"unknown site kinds {sorted(bad)}; valid kinds are {list(_KIND_RANK) + ['embed', 'out']}")
    out: list[str] = []
    if "embed" in keep:
        out.append("embed")
    for layer in range(n_layers):
        if "resid_pre" in keep:
            out.append(f"L{layer}.resid_pre")
        if "head" in keep:
            out.extend(f"L{layer}.H{h}" for h in range(n_heads))
        if "attn" in keep:
            out.append(f"L{layer}.attn")
        if "mlp" in keep:
            out.append(f"L{layer}.MLP")
        if "resid_post" in keep:
            out.append(f"L{layer}.resid_post")
    if "out" in keep:
        out.append("out")
    return out


def component_sites(n_layers: int, n_heads: int) -> list[str]:
    """The additive components used by component-level CircuitLasso: embed, heads, MLPs, out."""
    return all_sites(n_layers, n_heads, kinds=COMPONENT_KINDS)


def validate_sites(names: Iterable[str], available: Iterable[str]) -> list[str]:
    """Check that every name is a known site of the model; return them in computation order."""
    if isinstance(names, str):
        raise TypeError(f"sites must be a list of site names, got the string {names!r}; did you mean [{names!r}]?")
    names = list(names)
    if not names:
        raise ValueError("no sites requested; pass at least one site name, e.g. ['embed', 'L0.MLP']")
    avail = list(available)
    avail_set = set(avail)
    for n in names:
        parse_site(n)
        if n not in avail_set:
            shown = ", ".join(avail[:12]) + (" ..." if len(avail) > 12 else "")
            raise ValueError(f"unknown site {n!r} for this model; valid sites are: {shown}")
    return sort_sites(names)


#: Positions skipped by every circuitkit operation that pools or ablates over "the prompt's tokens":
#: position 0. It is BOS when the tokenizer prepends one (the toy LM, Tracr, GPT-2 style ``<|endoftext|>``
#: prefixes) and otherwise the first token, which in a causal LM attends only to itself and acts as an
#: attention sink whose activations are nearly prompt-independent. One rule everywhere: capture's
#: ``positions="after_bos"``, the runtime's pooling and ablation masks, EAP's metric (``skip_first=1``).
N_SKIPPED_POSITIONS = 1

#: The rows a circuit is fit on, and the default ``positions=`` of :func:`circuitkit.capture` and
#: :func:`circuitkit.runtime.store.capture_to_disk`: every real token but the first
#: (:data:`N_SKIPPED_POSITIONS`). ``ck.discover("circuitlasso" | "circuitlasso-group", ...)`` capture with
#: the same rule, so ``CircuitLasso().fit(ck.capture(model, ids, sites=...))`` and
#: ``ck.discover("circuitlasso", model, ids, sites=...)`` see the same rows and give the same circuit.
#: Pass ``positions="all"`` to keep position 0.
DEFAULT_POSITIONS = "after_bos"


def circuit_positions(skip_first: int = N_SKIPPED_POSITIONS) -> Any:
    """The ``positions=`` rule that skips the first ``skip_first`` tokens: :data:`DEFAULT_POSITIONS` for
    the default (so discovery and a default :func:`circuitkit.capture` agree), else a callable."""
    if not isinstance(skip_first, (int, np.integer)) or skip_first < 0:
        raise ValueError(f"skip_first must be an int >= 0, got {skip_first!r}")
    if skip_first == N_SKIPPED_POSITIONS:
        return DEFAULT_POSITIONS
    if skip_first == 0:
        return "all"

    def positions(_prompt: int, tokens: list[str]) -> list[int]:
        return list(range(int(skip_first), len(tokens)))

    return positions


def after_bos(_prompt: int, tokens: list[str]) -> list[int]:
    """Every position but the first (see :data:`N_SKIPPED_POSITIONS`); usable as capture's ``positions=``."""
    return list(range(N_SKIPPED_POSITIONS, len(tokens)))
