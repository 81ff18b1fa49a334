"""The ``ds.actsort`` namespace: derived views of a CandidateSet, computed on demand."""
from __future__ import annotations

import numpy as np
import scipy.sparse
import xarray as xr

from ._validation import InputError, did_you_mean


@xr.register_dataset_accessor("actsort")
class ActSortAccessor:
    """Helpers on any CandidateSet or sort set, as ``ds.actsort.<name>``.

    Examples
    --------
    >>> from actsort_nb.synthetic import simulate_recording
    >>> ds = simulate_recording(n_cells=5, shape=(32, 32), n_frames=50, seed=0)
    >>> ds.actsort.footprints_csr().shape[1] == 32 * 32
    True
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds
        self._csr = None

    def require(self, *names: str) -> None:
        """Raise :class:`InputError` naming the first variable in ``names`` the dataset lacks."""
        for name in names:
            if name not in self._ds.variables:
                raise InputError(
                    f"this dataset has no variable {name!r}, which this step needs."
                    + did_you_mean(name, list(self._ds.variables))
                )

    @property
    def n_candidates(self) -> int:
        """Number of candidates."""
        return int(self._ds.sizes["candidate"])

    @property
    def fov_shape(self) -> tuple[int, int]:
        """Field of view ``(height, width)``."""
        return int(self._ds.sizes["y"]), int(self._ds.sizes["x"])

    def footprints_csr(self) -> scipy.sparse.csr_matrix:
        """Footprints as a ``(candidate, y*x)`` CSR matrix (C pixel order), cached."""
        if self._csr is None:
            self.require("footprints")
            coo = self._ds["footprints"].data
            n, h, w = coo.shape
            m = scipy.sparse.coo_matrix(
                (coo.data, (coo.coords[0], coo.coords[1] * w + coo.coords[2])), shape=(n, h * w)
            )
            self._csr = m.tocsr()
            self._csr.sum_duplicates()
        return self._csr

    def centers(self) -> np.ndarray:
        """``(candidate, 2)`` centre (y, x) of each footprint: the mean of its pixels > 0 (ActSort's rule)."""
        csr = self.footprints_csr()
        w = self.fov_shape[1]
        pos = csr.copy()
        pos.data = (pos.data > 0).astype(np.float64)
        cols = pos.indices
        ys = scipy.sparse.csr_matrix((pos.data * (cols // w), cols, pos.indptr), shape=pos.shape).sum(1).A1
        xs = scipy.sparse.csr_matrix((pos.data * (cols % w), cols, pos.indptr), shape=pos.shape).sum(1).A1
        cnt = np.maximum(pos.sum(1).A1, 1)
        return np.stack([ys / cnt, xs / cnt], axis=1)
