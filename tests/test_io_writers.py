"""Writers of every supported format, as the original tools lay them out, for round-trip tests.

Each writer follows the producing tool's convention (MATLAB column-major order for
``.mat``, CaImAn's ``save_dict_to_hdf5`` for ``.hdf5``, Suite2p's ``np.save`` of dicts),
so a reader that gets an axis wrong fails the round trip. The tests at the bottom
check the writers themselves against those conventions, independently of the readers.
"""
from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import scipy.sparse

MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2026 HDF5 schema 1.00 ."


def make_truth(n: int = 5, h: int = 12, w: int = 10, t: int = 40, seed: int = 0):
    """Footprints (n, h, w) with one blob each (non-square FOV so swapped axes show), traces (n, t), movie (t, h, w)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fp = np.zeros((n, h, w), np.float32)
    for k in range(n):
        cy, cx = rng.uniform(2, h - 2), rng.uniform(2, w - 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
        fp[k] = np.where(blob > 0.2, blob, 0).astype(np.float32)
    tr = rng.gamma(1.0, 1.0, (n, t)).astype(np.float32)
    movie = (np.einsum("nt,nhw->thw", tr, fp) * 100 + rng.integers(0, 5, (t, h, w))).astype(np.int16)
    return fp, tr, movie


def _mat73_finish(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def write_extract_v73(path, fp, tr, image=None, *, struct: str | None = "output", fp_field="spatial_weights",
                      tr_field="temporal_weights", image_field="max_image", extra: dict | None = None) -> Path:
    """An EXTRACT output saved by MATLAB ``save(..., '-v7.3')``: [H W N] footprints, [T N] traces."""
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        g = f
        if struct:
            g = f.create_group(struct)
            g.attrs["MATLAB_class"] = np.bytes_(b"struct")

        def put(key, matlab_array):
            # h5py sees MATLAB's column-major array reversed.
            d = g.create_dataset(key, data=np.asarray(matlab_array).transpose())
            d.attrs["MATLAB_class"] = np.bytes_(b"single" if d.dtype == np.float32 else b"double")

        put(fp_field, np.moveaxis(fp, 0, -1))  # MATLAB [H W N]
        put(tr_field, tr.T)  # MATLAB [T N]
        if image is not None:
            put(image_field, image)  # MATLAB [H W]
        for key, value in (extra or {}).items():
            put(key, value)
    _mat73_finish(path)
    return path


def write_extract_v5(path, fp, tr, image=None, *, struct: str | None = "output", fp_field="spatial_weights",
                     tr_field="temporal_weights", image_field="max_image") -> Path:
    """The same output saved as MATLAB v5 (``scipy.io.savemat`` writes MATLAB order as given)."""
    fields = {fp_field: np.moveaxis(fp, 0, -1), tr_field: tr.T}
    if image is not None:
        fields[image_field] = image
    scipy.io.savemat(path, {struct: fields} if struct else fields)
    return Path(path)


def caiman_A(fp) -> scipy.sparse.csc_matrix:
    """CaImAn's A: (pixels, components) with each footprint flattened in Fortran order."""
    n = fp.shape[0]
    return scipy.sparse.csc_matrix(np.stack([fp[k].ravel(order="F") for k in range(n)], axis=1))


def write_caiman(path, fp, C, YrA=None, *, idx_components=None, fr=30.0, Cn=None) -> Path:
    """A CaImAn results file as ``save_dict_to_hdf5`` lays it out (None saved as 'NoneType')."""
    A = caiman_A(fp)
    with h5py.File(path, "w") as f:
        for part in ("data", "indices", "indptr"):
            f[f"estimates/A/{part}"] = getattr(A, part)
        f["estimates/A/shape"] = np.array(A.shape)
        f["estimates/C"] = C
        f["estimates/YrA"] = "NoneType" if YrA is None else YrA
        f["estimates/dims"] = np.array(fp.shape[1:])
        f["estimates/idx_components"] = "NoneType" if idx_components is None else np.asarray(idx_components)
        f["estimates/Cn"] = "NoneType" if Cn is None else Cn
        f["params/data/fr"] = fr
    return Path(path)


def write_suite2p(folder, fp, F, Fneu=None, iscell=None, *, ops_extra: dict | None = None, movie=None, fs=30.0) -> Path:
    """A Suite2p plane folder: pickled stat/ops dicts plus plain F/Fneu/iscell arrays and data.bin."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stat = []
    for k in range(fp.shape[0]):
        ypix, xpix = np.nonzero(fp[k])
        stat.append({"ypix": ypix.astype(np.int32), "xpix": xpix.astype(np.int32), "lam": fp[k][ypix, xpix].astype(np.float32),
                     "med": [float(np.median(ypix)), float(np.median(xpix))], "npix": int(ypix.size)})
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "F.npy", F.astype(np.float32))
    if Fneu is not None:
        np.save(folder / "Fneu.npy", Fneu.astype(np.float32))
    if iscell is not None:
        np.save(folder / "iscell.npy", iscell)
    ops = {"Ly": fp.shape[1], "Lx": fp.shape[2], "nframes": F.shape[1], "fs": fs, "neucoeff": 0.7,
           "meanImg": fp.sum(0).astype(np.float32), "yrange": [0, fp.shape[1]], "xrange": [0, fp.shape[2]]}
    ops.update(ops_extra or {})
    np.save(folder / "ops.npy", ops, allow_pickle=True)
    if movie is not None:
        np.asarray(movie, np.int16).tofile(folder / "data.bin")
    return folder


def write_nwb(path, fp, tr, *, rate=30.0, ids=None, pixel_masks=False) -> Path:
    """An NWB file with ImageSegmentation/PlaneSegmentation and Fluorescence/RoiResponseSeries."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel

    nwb = NWBFile(session_description="test", identifier="actsort-test", session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="OpticalChannel", description="green", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=channel, imaging_rate=rate, description="plane",
                                     device=device, excitation_lambda=920.0, indicator="GCaMP6f", location="V1")
    mod = nwb.create_processing_module(name="ophys", description="optical physiology")
    seg = ImageSegmentation()
    mod.add(seg)
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="rois", imaging_plane=plane)
    for k in range(fp.shape[0]):
        kwargs = {} if ids is None else {"id": int(ids[k])}
        if pixel_masks:
            y, x = np.nonzero(fp[k])  # NWB's pixel_mask x is the row, as image_mask's first axis
            ps.add_roi(pixel_mask=[(int(yi), int(xi), float(fp[k, yi, xi])) for yi, xi in zip(y, x)], **kwargs)
        else:
            ps.add_roi(image_mask=fp[k], **kwargs)
    region = ps.create_roi_table_region(region=list(range(fp.shape[0])), description="all")
    fluo = Fluorescence()
    mod.add(fluo)
    fluo.create_roi_response_series(name="RoiResponseSeries", data=tr.T, rois=region, unit="lumens", rate=rate)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return Path(path)


def write_suite2p_nwb(path, fp, F, Fneu, spks, *, rate=15.0, dimension=True, backgrounds=False,
                      containers=("Fluorescence", "Neuropil", "Deconvolved")) -> Path:
    """An NWB file as ``suite2p.io.nwb.save_nwb`` writes one plane.

    Pixel masks are ``(ypix, xpix, lam)`` rows in ``(x, y, weight)``; three Fluorescence
    containers (``Fluorescence``, ``Neuropil``, ``Deconvolved``) each hold a series
    ``plane0``; the TwoPhotonSeries (an external file) records ``dimension=[Ly, Lx]``
    and ``Backgrounds_0`` holds the full-size mean image.
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries, TwoPhotonSeries

    n, ly, lx = fp.shape
    nwb = NWBFile(session_description="suite2p_proc", identifier="s2p", session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="Microscope")
    channel = OpticalChannel(name="OpticalChannel", description="an optical channel", emission_lambda=500.0)
    plane = nwb.create_imaging_plane(name="ImagingPlane", optical_channel=channel, imaging_rate=rate, description="standard",
                                     device=device, excitation_lambda=600.0, indicator="GCaMP", location="V1",
                                     grid_spacing=[2.0, 2.0], grid_spacing_unit="microns")
    extra = {"dimension": [ly, lx]} if dimension else {}
    series = TwoPhotonSeries(name="TwoPhotonSeries", external_file=[""], imaging_plane=plane, starting_frame=[0],
                             format="external", starting_time=0.0, rate=rate, num_samples=F.shape[1], **extra)
    nwb.add_acquisition(series)
    seg = ImageSegmentation()
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="suite2p output", imaging_plane=plane,
                                       reference_images=series)
    mod = nwb.create_processing_module(name="ophys", description="optical physiology processed data")
    mod.add(seg)
    for k in range(n):
        ypix, xpix = np.nonzero(fp[k])
        ps.add_roi(pixel_mask=np.array([ypix, xpix, fp[k][ypix, xpix]]).T)
    region = ps.create_roi_table_region(region=list(range(n)), description="ROIs for plane0")
    with warnings.catch_warnings():  # hdmf warns that the series is made before its container joins the file
        warnings.filterwarnings("ignore", "The linked table for DynamicTableRegion", UserWarning)
        for data, label in zip((F, Fneu, spks), containers):
            rrs = RoiResponseSeries(name="plane0", data=np.transpose(data), rois=region, unit="lumens", rate=rate)
            mod.add(Fluorescence(roi_response_series=rrs, name=label))
    if backgrounds:
        images = Images(name="Backgrounds_0")
        images.add_image(GrayscaleImage(name="meanImg", data=fp.sum(0)))
        mod.add(images)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return Path(path)


def write_h5_movie(path, movie, *, matlab=False, dataset="mov") -> Path:
    """A movie in HDF5: Python order (T, H, W), or as ActSort's MATLAB [H W T] with F_per_pixel."""
    with h5py.File(path, "w") as f:
        if matlab:
            f[dataset] = np.asarray(movie).transpose(0, 2, 1)  # MATLAB [H W T] seen by h5py as (T, W, H)
            f["F_per_pixel"] = np.zeros(movie.shape[2:0:-1], np.float32)
        else:
            f[dataset] = movie
    return Path(path)


# --------------------------------------------------------------------------- writer checks
def test_v73_writer_has_matlab_header_and_reversed_axes(tmp_path):
    fp, tr, _ = make_truth()
    p = write_extract_v73(tmp_path / "o.mat", fp, tr)
    assert p.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(p, "r") as f:
        assert f["output/spatial_weights"].shape == (5, 10, 12)  # (N, W, H)
        assert f["output/temporal_weights"].shape == (5, 40)  # (N, T)


def test_v5_writer_keeps_matlab_order():
    import io

    fp, tr, _ = make_truth()
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"output": {"spatial_weights": np.moveaxis(fp, 0, -1), "temporal_weights": tr.T}})
    buf.seek(0)
    s = scipy.io.loadmat(buf)["output"][0, 0]
    assert s["spatial_weights"].shape == (12, 10, 5) and s["temporal_weights"].shape == (40, 5)


def test_caiman_A_is_fortran_ordered():
    fp, _, _ = make_truth()
    A = caiman_A(fp)
    assert A.shape == (12 * 10, 5)
    np.testing.assert_array_equal(A[:, 2].toarray().reshape((12, 10), order="F"), fp[2])
