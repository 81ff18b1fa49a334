"""The candidate panel: an anywidget that shows one candidate and takes the human's decision.

The ES module (``panel.js``) and the stylesheet (``panel.css``) are files beside this
one. The Python side only holds state as synced traits; :class:`~actsort_nb.widgets.app.SortingApp`
fills them and reacts to :attr:`CandidatePanel.action`:

* ``current`` -- the shown candidate (crops, clips, trace as binary buffers; see
  :mod:`actsort_nb.widgets._payload`), replaced as one dict so the browser redraws once;
* ``fov`` -- the field-of-view map, sent once: summary images and a few bytes per candidate;
* ``map_state`` -- per-candidate human label and P(cell), resent after each decision;
* ``model_view`` -- the model's P(cell) for the shown candidate after the latest retrain;
* ``action`` -- what the user asked for (set by the browser, one dict per request, with a
  sequence number ``seq``); ``ack`` -- the last ``seq`` the kernel has handled.
"""
from __future__ import annotations

import pathlib

import anywidget
import traitlets

__all__ = ["ACTION_KINDS", "CandidatePanel"]

_HERE = pathlib.Path(__file__).parent

#: What the browser may ask for in :attr:`CandidatePanel.action` (``kind``).
ACTION_KINDS = ("label", "skip", "undo", "prev", "next", "goto")


class CandidatePanel(anywidget.AnyWidget):
    """Labelling panel: candidate view, decision buttons and keys, field-of-view map.

    Keys (while the panel has focus): ``↑``/``a`` cell, ``↓``/``r`` not a cell,
    ``s`` skip, ``z`` undo, ``←``/``→`` previous/next in the history, ``Space`` play
    the event clips. Clicking a candidate on the map (or typing its id) shows it.

    Examples
    --------
    >>> p = CandidatePanel()
    >>> p.color_by, p.image, p.ack
    ('label', 'max', 0)
    """

    _esm = _HERE / "panel.js"
    _css = _HERE / "panel.css"

    current = traitlets.Dict(help="payload of the shown candidate").tag(sync=True)
    fov = traitlets.Dict(help="field-of-view map data, sent once").tag(sync=True)
    map_state = traitlets.Dict(help="per-candidate labels and P(cell) for the map").tag(sync=True)
    model_view = traitlets.Dict(help="{index, p_cell, threshold} after the latest retrain").tag(sync=True)
    counts = traitlets.Dict(help="labelled / cells / not cells / history position").tag(sync=True)
    action = traitlets.Dict(help="the user's latest request, set by the browser").tag(sync=True)
    ack = traitlets.Int(0, help="seq of the last action the kernel handled").tag(sync=True)
    status = traitlets.Unicode("", help="one line of feedback under the buttons").tag(sync=True)
    color_by = traitlets.Enum(["label", "p_cell"], "label", help="map colouring").tag(sync=True)
    image = traitlets.Enum(["max", "mean", "corr"], "max", help="summary image behind crops and map").tag(sync=True)
    contrast = traitlets.List(traitlets.Float(), [0.0, 1.0], minlen=2, maxlen=2,
                              help="black and white points as fractions of the default limits").tag(sync=True)

    def _repr_keys(self):  # keep the repr short: no megabytes of bytes in a traceback
        yield from ("color_by", "image", "ack", "status")
