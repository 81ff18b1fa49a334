"""NWB files: a ``PlaneSegmentation`` (image or pixel masks) plus an ``RoiResponseSeries``.

Needs the optional extra ``pip install actsort_nb[nwb]`` (pynwb). Image masks are taken as
``(row, col)`` = ``(y, x)`` images, as CaImAn and Suite2p write them. A pixel mask's ``x``
field indexes the same first axis (the row) and ``y`` the column: Suite2p writes
``(ypix, xpix, lam)`` into ``(x, y, weight)``, as do roiextractors and pynwb's tutorial.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import xarray as xr

from ..candidates import candidate_set
from ._common import (
    Backend,
    InputError,
    as_float32,
    as_path,
    check_fov,
    check_rate,
    check_size,
    guard,
    h5_matches,
    is_hdf5,
    name,
)
from .movie import resolve_movie

__all__ = ["read", "guess_can_open", "BACKEND"]


def guess_can_open(path) -> bool:
    """True for an HDF5 file (by magic bytes) with NWB's root ``nwb_version`` attribute."""
    return h5_matches(path, lambda fh: "nwb_version" in fh.attrs or ("general" in fh and "acquisition" in fh))


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise InputError(
            "Reading NWB files needs the optional package pynwb; install it with pip install 'actsort_nb[nwb]'."
        ) from None
    return pynwb


def read(
    path,
    *,
    plane_segmentation: str | None = None,
    series: str | None = None,
    movie=None,
    fov_shape: tuple[int, int] | None = None,
    frame_rate: float | None = None,
) -> xr.Dataset:
    """Read an NWB file's ROIs and their responses into a CandidateSet.

    Parameters
    ----------
    path : str or path-like
        The ``.nwb`` file.
    plane_segmentation : str, optional
        Name of the ``PlaneSegmentation`` when the file has several.
    series : str, optional
        The ``RoiResponseSeries``, by name or as ``"container/name"`` (e.g.
        ``"Fluorescence/plane0"`` in Suite2p's files). Default: the one over the
        chosen segmentation in the container named ``Fluorescence``, else in a
        ``Fluorescence`` container, else any (e.g. ``DfOverF``).
    movie : path or array, optional
        The movie (kept lazy).
    fov_shape : (int, int), optional
        Image size ``(height, width)`` for pixel masks. Default: the movie's frame
        size, else the imaging series' ``dimension`` or the reference images in the file.
    frame_rate : float, optional
        Override of the series' ``rate`` (or of its timestamps).

    Returns
    -------
    xarray.Dataset
        CandidateSet; candidate ids are the segmentation's ids; ``source_label``
        comes from an ``iscell`` column when present.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from datetime import datetime, timezone
    >>> from pynwb import NWBFile, NWBHDF5IO
    >>> from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel
    >>> f = NWBFile(session_description="demo", identifier="demo", session_start_time=datetime.now(timezone.utc))
    >>> plane = f.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="ch", description="",
    ...     emission_lambda=510.0), imaging_rate=10.0, description="", device=f.create_device(name="scope"),
    ...     excitation_lambda=920.0, indicator="GCaMP6f", location="V1")
    >>> ophys = f.create_processing_module(name="ophys", description="")
    >>> seg = ImageSegmentation(); _ = ophys.add(seg)
    >>> ps = seg.create_plane_segmentation(name="ps", description="", imaging_plane=plane)
    >>> _ = ps.add_roi(image_mask=np.eye(6, 5))
    >>> fl = Fluorescence(); _ = ophys.add(fl)
    >>> _ = fl.create_roi_response_series(name="F", data=np.ones((30, 1)), unit="a.u.", rate=10.0,
    ...     rois=ps.create_roi_table_region(region=[0], description="all"))
    >>> p = os.path.join(tempfile.mkdtemp(), "demo.nwb")
    >>> with NWBHDF5IO(p, "w") as io:
    ...     io.write(f)
    >>> dict(read(p).sizes)
    {'candidate': 1, 'y': 6, 'x': 5, 'time': 30}
    """
    pynwb = _pynwb()
    from pynwb.ophys import PlaneSegmentation, RoiResponseSeries

    path = as_path(path)
    if not path.is_file():
        raise InputError(f"{name(path)}: no such file; check the path.")
    if not is_hdf5(path):
        raise InputError(f"{name(path)}: is not an HDF5-based NWB file (no HDF5 signature); pass an .nwb file.")
    with guard(path, "NWB file", extra=(RuntimeError, KeyError)):
        try:
            io = pynwb.NWBHDF5IO(str(path), "r")
            nwbfile = io.read()
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise InputError(
                f"{name(path)}: pynwb could not read the file ({type(exc).__name__}); it is not valid NWB or is truncated, so re-export it."
            ) from None
        try:
            objs = list(nwbfile.objects.values())
            segs = [o for o in objs if isinstance(o, PlaneSegmentation)]
            if not segs:
                raise InputError(f"{name(path)}: holds no PlaneSegmentation; save the ROIs with ImageSegmentation first.")
            if plane_segmentation is not None:
                segs = [s for s in segs if s.name == plane_segmentation]
                if not segs:
                    raise InputError(f"{name(path)}: has no PlaneSegmentation named {plane_segmentation!r}; check the name.")
            elif len(segs) > 1:
                raise InputError(
                    f"{name(path)}: holds {len(segs)} PlaneSegmentations ({', '.join(s.name for s in segs)}); pass plane_segmentation='name'."
                )
            ps = segs[0]
            all_series = [o for o in objs if isinstance(o, RoiResponseSeries) and o.rois.table is ps]
            if series is not None:
                all_series = [s for s in all_series if series in (s.name, _label(s))]
            if not all_series:
                raise InputError(
                    f"{name(path)}: has no RoiResponseSeries over PlaneSegmentation {ps.name!r}"
                    + (f" named {series!r}" if series else "") + "; save the traces with Fluorescence."
                )
            best = min(map(_rank, all_series))
            tied = [s for s in all_series if _rank(s) == best]
            if len(tied) > 1:
                raise InputError(
                    f"{name(path)}: holds {len(tied)} RoiResponseSeries over PlaneSegmentation {ps.name!r} "
                    f"({', '.join(_label(s) for s in tied)}); pass series='container/name' to say which holds the fluorescence."
                )
            rrs = tied[0]
            if movie is not None:
                movie = resolve_movie(movie, source=path)  # opened once: its frames give pixel masks their size
            fp, (h, w) = _masks(ps, path, fov_shape, movie, objs)
            rows = np.asarray(rrs.rois.data[:], dtype=np.int64)
            data = rrs.data
            check_size(data.shape, np.float32, "RoiResponseSeries data", path=path, field=rrs.name)
            tr = np.asarray(data[:])
            if tr.ndim == 1:
                tr = tr[:, None]
            if tr.ndim != 2 or tr.shape[1] != rows.size:
                hint = " (it looks transposed: NWB stores (time, ROI))" if tr.ndim == 2 and tr.shape[0] == rows.size else ""
                raise InputError(
                    f"{name(path)}: field {rrs.name!r}: the data has shape {tr.shape} but the series covers {rows.size} ROIs{hint}; "
                    "write data as (time, ROI)."
                )
            if tr.dtype.kind not in "biuf":
                raise InputError(f"{name(path)}: field {rrs.name!r}: the data has dtype {tr.dtype}, not numbers; write numeric traces.")
            if rows.size and (rows.min() < 0 or rows.max() >= fp.shape[0]):
                raise InputError(f"{name(path)}: field {rrs.name!r}: the series refers to ROI rows outside the segmentation; re-export the file.")
            ids = np.asarray(ps.id.data[:])[rows]
            rate = frame_rate
            if rate is None:
                if rrs.rate is not None:
                    rate = check_rate(rrs.rate, path=path, field=f"{rrs.name}.rate")
                elif rrs.timestamps is not None and len(rrs.timestamps) > 1:
                    step = float(np.median(np.diff(np.asarray(rrs.timestamps[:]))))
                    rate = check_rate(1.0 / step if step > 0 else 0.0, path=path, field=f"{rrs.name}.timestamps")
            cvars = {}
            if "iscell" in ps.colnames:
                isc = np.asarray(ps["iscell"].data[:])
                lab = isc[:, 0] if isc.ndim == 2 else isc
                if np.isin(lab, (0, 1)).all():
                    cvars["source_label"] = lab[rows].astype(np.int8)
        finally:
            io.close()
    mov = resolve_movie(movie, fov=(h, w), n_frames=tr.shape[0], source=path)
    return candidate_set(
        fp[rows],
        as_float32(tr, "RoiResponseSeries data", path=path, field=rrs.name).T,
        movie=mov,
        ids=ids,
        frame_rate=rate,
        fov_shape=(h, w),
        source=name(path),
        source_format="nwb",
        candidate_vars=cvars,
        attrs={"plane_segmentation": ps.name, "series": _label(rrs)},
    )


def _label(series) -> str:
    """``container/name`` of a RoiResponseSeries, e.g. ``Fluorescence/plane0``."""
    return f"{getattr(series.parent, 'name', '?')}/{series.name}"


def _rank(series) -> int:
    """Preference for the default series: Suite2p writes ``Fluorescence``, ``Neuropil`` and ``Deconvolved`` containers."""
    parent = series.parent
    if getattr(parent, "name", "") == "Fluorescence":
        return 0
    return 1 if getattr(parent, "neurodata_type", "") == "Fluorescence" else 2


def _masks(ps, path, fov_shape, movie, objs) -> tuple[scipy.sparse.csr_matrix, tuple[int, int]]:
    cols = set(ps.colnames)
    if "image_mask" in cols:
        data = ps["image_mask"].data
        shp = tuple(data.shape)
        if len(shp) != 3:
            raise InputError(
                f"{name(path)}: field 'image_mask' must be (ROI, y, x), got shape {shp}; volumetric masks are not supported."
            )
        n, h, w = shp
        check_fov((h, w), "image_mask size", path=path, field="image_mask")
        step = max(1, (64 * 2**20) // max(1, h * w * 8))
        parts = [
            scipy.sparse.csr_matrix(np.asarray(data[s : s + step], dtype=np.float32).reshape(-1, h * w)) for s in range(0, n, step)
        ]
        return scipy.sparse.vstack(parts, format="csr"), (h, w)
    if "pixel_mask" in cols:
        if fov_shape is not None:
            (h, w), origin = check_fov(fov_shape, "fov_shape", path=path), "fov_shape"
        elif movie is not None:
            (h, w), origin = tuple(int(s) for s in np.shape(movie)[1:3]), "the movie's frames"
        else:
            found = _file_fov(ps, objs, path)
            if found is None:
                raise NoFieldOfView(
                    f"{name(path)}: the ROIs are pixel masks, which do not record the image size; "
                    "pass fov_shape=(height, width) or the movie.",
                    n_rois=len(ps),
                )
            (h, w), origin = found
        target = ps["pixel_mask"].target.data[:]
        index = np.asarray(ps["pixel_mask_index"].data[:], dtype=np.int64)
        owner = np.repeat(np.arange(index.size), np.diff(np.concatenate([[0], index])))
        # NWB's x is the first image axis (the row), as in image_mask: see the module docstring
        row = np.asarray(target["x"], np.int64)
        col = np.asarray(target["y"], np.int64)
        wgt = np.asarray(target["weight"], np.float32)
        if row.size and (row.min() < 0 or col.min() < 0 or row.max() >= h or col.max() >= w):
            raise InputError(
                f"{name(path)}: field 'pixel_mask': pixels fall outside the {h}x{w} field of view from {origin}; "
                "pass the right fov_shape=(height, width)."
            )
        return scipy.sparse.csr_matrix((wgt, (owner, row * w + col)), shape=(index.size, h * w)), (h, w)
    raise InputError(f"{name(path)}: the PlaneSegmentation has neither image_mask nor pixel_mask; save the ROI masks.")


class NoFieldOfView(InputError):
    """Pixel masks with no image size anywhere; ``n_rois`` still says how many ROIs there are."""

    def __init__(self, message: str, n_rois: int):
        super().__init__(message)
        self.n_rois = n_rois


def _file_fov(ps, objs, path) -> tuple[tuple[int, int], str] | None:
    """``(height, width)`` the file records for pixel masks, and where from; None if nothing (or nothing consistent).

    First the ``dimension`` (or frame size) of the segmentation's reference images and
    of the imaging series on its plane, else the 2-D images of ``Images`` containers
    (Suite2p's ``Backgrounds_0``).
    """
    from pynwb.base import Images
    from pynwb.image import ImageSeries
    from pynwb.ophys import TwoPhotonSeries

    refs = ps.reference_images
    refs = list(refs.values()) if isinstance(refs, dict) else list(refs or [])
    refs += [o for o in objs if isinstance(o, TwoPhotonSeries) and o.imaging_plane is ps.imaging_plane]
    sizes = {}
    for s in refs:
        if not isinstance(s, ImageSeries):
            continue
        dim = None if s.dimension is None else np.asarray(s.dimension[:]).ravel()
        if dim is not None and dim.size == 2:
            sizes.setdefault(tuple(int(v) for v in dim), f"{s.name}.dimension")
        elif s.data is not None and len(np.shape(s.data)) == 3 and min(np.shape(s.data)) > 0:
            sizes.setdefault(tuple(int(v) for v in np.shape(s.data)[1:]), f"{s.name} frames")
    if not sizes:
        for images in (o for o in objs if isinstance(o, Images)):
            for img in images.images.values():
                if img.data is not None and len(np.shape(img.data)) == 2:
                    sizes.setdefault(tuple(int(v) for v in np.shape(img.data)), f"image {images.name}/{img.name}")
    if len(sizes) != 1:
        return None
    ((hw, origin),) = sizes.items()
    return check_fov(hw, origin, path=path), origin


BACKEND = Backend(
    name="nwb",
    description="NWB (PlaneSegmentation + RoiResponseSeries; needs pynwb)",
    guess_can_open=guess_can_open,
    read=read,
    extensions=(".nwb",),
)

