"""Generic associative (prefix) scan over tuples of tensors, in O(log T) depth.

All prefix "sums" ``e_0, e_0 * e_1, ..., e_0 * ... * e_{T-1}`` of elements under an
associative operator ``*``, computed by the odd/even recursion of Blelloch (1990),
"Prefix sums and their applications", as used for Kalman smoothing by Särkkä &
García-Fernández (2021), "Temporal parallelization of Bayesian smoothers".
Every level applies the operator once to a whole batch of element pairs, so the
number of operator calls is O(log T) while the work stays O(T).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Elements = tuple[Tensor, ...]
Combine = Callable[[Elements, Elements], Elements]


def _interleave(even: Elements, odd: Elements) -> Elements:
    """Merge (n_even, …) and (n_odd, …) along dim 0 as e0, o0, e1, o1, …"""
    out = []
    for e, o in zip(even, odd, strict=True):
        n_odd = o.shape[0]
        pairs = torch.stack((e[:n_odd], o), dim=1).flatten(0, 1)   # (2 n_odd, …)
        out.append(pairs if e.shape[0] == n_odd else torch.cat((pairs, e[n_odd:]), 0))
    return tuple(out)


def _scan(combine: Combine, elems: Elements) -> Elements:
    n = elems[0].shape[0]
    if n < 2:
        return elems
    # combine neighbouring pairs (0,1), (2,3), ... and scan the half-length sequence
    pair_sums = combine(tuple(e[0:n - 1:2] for e in elems), tuple(e[1::2] for e in elems))
    odd = _scan(combine, pair_sums)                    # prefixes ending at 1, 3, 5, ...
    if n < 3:
        return _interleave(tuple(e[:1] for e in elems), odd)
    n_even_rest = (n - 1) // 2                          # prefixes ending at 2, 4, ...
    rest = combine(tuple(o[:n_even_rest] for o in odd), tuple(e[2::2] for e in elems))
    even = tuple(torch.cat((e[:1], r), 0) for e, r in zip(elems, rest, strict=True))
    return _interleave(even, odd)


def associative_scan(combine: Combine, elems: Sequence[Tensor], reverse: bool = False
                     ) -> Elements:
    """Inclusive scan of ``elems`` along dim 0 under an associative ``combine``.

    Args:
        combine: ``combine(earlier, later) -> combined``; each argument is a tuple of
            tensors whose dim 0 indexes a batch of elements (all of equal length).
        elems: tuple of tensors (T, …), all with the same T.
        reverse: scan from the end: entry t is e_t * e_{t+1} * ... * e_{T-1}.

    Returns: tuple of tensors (T, …), entry t the combination of elements 0..t
        (t..T-1 when ``reverse``).
    """
    elems = tuple(elems)
    if len({e.shape[0] for e in elems}) != 1:
        raise ValueError("all scanned tensors need the same length along dim 0")
    if not reverse:
        return _scan(combine, elems)
    flipped = tuple(torch.flip(e, (0,)) for e in elems)
    out = _scan(lambda a, b: combine(b, a), flipped)
    return tuple(torch.flip(o, (0,)) for o in out)
