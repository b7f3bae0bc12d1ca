"""Class evidence for the app's images (`se_viz.explain`, `se_viz.deletion` on a result's
crop): computed only when a view asks, once per (image, network, class) for every session,
in turn with every other network run.

Gradients run in Paddle eager (about 2-3x a forward), so the numbers live in the store
that holds the per-image results (`se_viz.runs.Results`: one LRU bounded in entries and
bytes, shared by every session) and a miss waits in the same fair queue, its user shown
their place in the line. (Not ``st.cache_data``: a cached function may not draw that
notice into the page, and its copy would be unpickled on every rerun.) Every block gets
its CAM in the one backward pass, so switching the block redraws cached arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import images
from ..results import DeletionCurve, Evidence
from ..runs import ImageResult, Photo, net_key
from .common import queue_notice
from .state import results

ORDERS = ("attribution", "gate", "random")  # deletion orders, most important first
DELETION_STEPS = 20  # points per deletion curve: about one forward each
DELETION_SEED = 0  # the random order, the same for every user


def _batch(res: ImageResult, model: Any) -> np.ndarray:
    """The crop the network saw, normalised: (1, 3, H, W) float32."""
    return images.normalize(res.crop, model.preprocessing)[None]


def _read_only(ev: Evidence) -> Evidence:
    for part in (ev.target, ev.logits, *ev.gates.values(), *ev.gate_grad.values(),
                 *ev.cam.values(), *ev.layercam.values()):
        part.flags.writeable = False
    return ev


def _shared(key: tuple, photo: Photo, label: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``key`` in the shared store; a miss waits its turn in the
    fair queue (the user sees their place, then a spinner saying ``label``)."""
    store = results()
    with queue_notice(label) as notice:
        def queued() -> Any:
            with store.queue.turn(notice, key=key, tag=photo.digest[:12]), notice.running():
                return compute()
        return store.cache.get_or_compute(key, queued)


def class_evidence(photo: Photo, res: ImageResult, model: Any, target: int) -> Evidence:
    """Evidence for class ``target`` on the image of ``res`` (one image; CAM and LayerCAM
    for every block). Raises ValueError for a class outside the network's range."""
    from .. import explain  # paddle is imported when a network runs

    target = int(target)
    key = ("evidence", photo.digest, net_key(model), target, "all blocks")
    return _shared(key, photo, f"Computing the evidence for class {target} on "
                   f"'{photo.name}' (one forward and one backward pass) ...",
                   lambda: _read_only(explain(model, _batch(res, model), target=target,
                                              names=(photo.name,))))


def top1_evidence(photo: Photo, res: ImageResult, model: Any) -> Evidence:
    """`class_evidence` for the image's top-1 class (what the overview colours by)."""
    return class_evidence(photo, res, model, int(np.argmax(res.probs)))


def deletion_key(photo: Photo, model: Any, block: str, target: int) -> tuple:
    """What identifies one run of `deletion_curves`."""
    return ("deletion", photo.digest, net_key(model), block, int(target), DELETION_STEPS,
            DELETION_SEED)


def deletion_curves(photo: Photo, res: ImageResult, model: Any, block: str, target: int
                    ) -> tuple[DeletionCurve, ...]:
    """The target's probability as the gates of ``block`` ("all": every block's, ranked
    together) are set to 0 in each of `ORDERS` (about ``DELETION_STEPS`` forwards per
    order), one turn in the queue for all three."""
    from .. import deletion

    def compute() -> tuple[DeletionCurve, ...]:
        batch = _batch(res, model)
        return tuple(deletion(model, batch, block, order=o, target=int(target),
                              steps=DELETION_STEPS, seed=DELETION_SEED) for o in ORDERS)

    return _shared(deletion_key(photo, model, block, target), photo,
                   f"Deleting the gates of {block} in {len(ORDERS)} orders "
                   f"({len(ORDERS) * DELETION_STEPS} forward passes) ...", compute)
