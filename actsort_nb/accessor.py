"""The ``ds.actsort`` namespace: derived views of a CandidateSet, computed on demand."""
from __future__ import annotations

import numpy as np
import scipy.sparse
import sparse
import xarray as xr

from ._validation import InputError, by_dims, did_you_mean


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
        self._csr_of = None  # the footprints array the cached CSR was made from
        self._coo = None
        self._coo_of = None  # the variable's own data the cached COO was made from

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

    def footprints_coo(self) -> sparse.COO:
        """Footprints as a ``sparse.COO`` of shape ``(candidate, y, x)``, cached.

        By dimension name, whatever the variable's axis order, and from any array
        (``sparse``, numpy, dask): the one way the package reads footprints.
        """
        self.require("footprints")
        var = self._ds["footprints"]
        raw = var.variable._data
        if self._coo is not None and self._coo_of is raw:
            return self._coo
        data = by_dims(var, ("candidate", "y", "x"), "footprints")
        if hasattr(data, "compute") and not isinstance(data, sparse.SparseArray):  # dask
            data = data.compute()
        if isinstance(data, sparse.SparseArray):
            coo = data.asformat("coo")
        else:
            coo = sparse.COO.from_numpy(np.asarray(data))
        self._coo, self._coo_of = coo, raw
        return coo

    def footprints_csr(self) -> scipy.sparse.csr_matrix:
        """Footprints as a ``(candidate, y*x)`` CSR matrix (C pixel order), cached."""
        coo = self.footprints_coo()
        if self._csr is None or self._csr_of is not coo:
            n, h, w = coo.shape
            m = scipy.sparse.coo_matrix(
                (coo.data, (coo.coords[0], coo.coords[1] * w + coo.coords[2])), shape=(n, h * w)
            )
            self._csr = m.tocsr()
            self._csr.sum_duplicates()
            self._csr_of = coo
        return self._csr

    def subset(self, candidate) -> xr.Dataset:
        """Select candidates, like ``ds.isel(candidate=...)`` but fast on sparse footprints.

        ``isel`` on a ``sparse.COO`` compiles code (numba) the first time in each
        process, which takes seconds; this selects the footprint entries with numpy.

        Parameters
        ----------
        candidate : int array, bool mask or slice
            Positions along ``candidate``, without repeats.

        Returns
        -------
        xarray.Dataset
            The same dataset restricted to those candidates, in the order given.
        """
        n = self.n_candidates
        try:
            idx = np.atleast_1d(np.arange(n)[candidate])
        except IndexError as exc:
            raise InputError(f"subset: {exc}; give positions in 0..{n - 1} or a boolean mask of length {n}.") from None
        if np.unique(idx).size != idx.size:
            raise InputError("subset takes each candidate at most once; remove the repeated positions.")
        if "footprints" not in self._ds.variables:
            return self._ds.isel(candidate=idx)
        coo = self.footprints_coo()
        pos = np.full(n, -1, dtype=np.int64)
        pos[idx] = np.arange(idx.size)
        new_row = pos[coo.coords[0]]
        keep = new_row >= 0
        coords = np.vstack([new_row[keep], coo.coords[1][keep], coo.coords[2][keep]]).astype(coo.coords.dtype)
        order = np.lexsort(coords[::-1])
        fp = sparse.COO(
            coords[:, order], coo.data[keep][order], shape=(idx.size,) + coo.shape[1:],
            has_duplicates=False, sorted=True,
        )
        out = self._ds.drop_vars("footprints").isel(candidate=idx)
        return out.assign(footprints=(("candidate", "y", "x"), fp, self._ds["footprints"].attrs))

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
