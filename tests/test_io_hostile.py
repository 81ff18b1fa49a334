"""Hostile input catalogue (issue 7, item 4): malformed files across every reader.

Each case builds one malformed input in ``tmp_path`` and returns ``(call, named)``:
``call()`` must raise :class:`InputError` whose message is one sentence naming the
file ``named``; nothing may be written (no partial output) and no code may run.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile
from test_io_writers import (
    _mat73_finish,
    make_truth,
    write_caiman,
    write_extract_v5,
    write_extract_v73,
    write_h5_movie,
    write_nwb,
    write_suite2p,
)

from actsort_nb import InputError
from actsort_nb.io import (
    caiman,
    croissant,
    describe,
    extract,
    neurofinder,
    open_candidates,
    open_movie,
    read_actsort_benchmark,
    suite2p,
)

FP, TR, MOVIE = make_truth(n=3, h=8, w=9, t=20, seed=11)


def assert_one_sentence(msg: str) -> None:
    """One line, ends with a full stop (or a question), and no sentence break inside."""
    assert "\n" not in msg, msg
    assert msg.endswith((".", "?")), msg
    assert not re.search(r"[.?!]\s+[A-Z]", msg), f"more than one sentence: {msg}"
    msg.encode("utf-8")  # printable to a UTF-8 terminal (no lone surrogates)


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


class Evil:
    """Unpickling this would create a marker file (builtins.open in write mode)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- EXTRACT .mat
def extract_v73_truncated(d):
    p = truncate(write_extract_v73(d / "o.mat", FP, TR))
    return (lambda: extract.read(p)), p


def extract_v73_missing_traces(d):
    p = d / "o.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["spatial_weights"] = np.moveaxis(FP, 0, -1).T
    _mat73_finish(p)
    return (lambda: extract.read(p)), p


def extract_v73_no_footprint_field(d):
    p = d / "o.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["weights"] = np.moveaxis(FP, 0, -1).T
        f["temporal_weights"] = TR
    _mat73_finish(p)
    return (lambda: extract.read(p)), p


def extract_v73_nan_footprints(d):
    fp = FP.copy()
    fp[1, 2, 2] = np.nan
    p = write_extract_v73(d / "o.mat", fp, TR)
    return (lambda: extract.read(p)), p


def extract_v73_inf_traces(d):
    tr = TR.copy()
    tr[0, 3] = np.inf
    p = write_extract_v73(d / "o.mat", FP, tr)
    return (lambda: extract.read(p)), p


def extract_v73_char_traces(d):
    p = write_extract_v73(d / "o.mat", FP, TR)
    with h5py.File(p, "r+") as f:
        del f["output/temporal_weights"]
        ds = f["output"].create_dataset("temporal_weights", data=np.frombuffer(b"not numbers", np.uint8).astype(np.uint16)[:, None])
        ds.attrs["MATLAB_class"] = np.bytes_(b"char")
    return (lambda: extract.read(p)), p


def extract_v73_zero_size_traces(d):
    p = write_extract_v73(d / "o.mat", FP, np.zeros((3, 0), np.float32))
    return (lambda: extract.read(p)), p


def extract_v73_gigantic_traces(d):
    p = d / "o.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["spatial_weights"] = np.moveaxis(FP, 0, -1).T
        f.create_dataset("temporal_weights", shape=(10**6, 10**6), dtype="f8", chunks=(64, 64))  # 8 TB declared
    _mat73_finish(p)
    return (lambda: extract.read(p)), p


def extract_v73_gigantic_footprints(d):
    p = d / "o.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f.create_dataset("spatial_weights", shape=(3, 10**5, 10**5), dtype="f4", chunks=(1, 64, 64))
        f["temporal_weights"] = TR
    _mat73_finish(p)
    return (lambda: extract.read(p)), p


def extract_v5_truncated(d):
    p = truncate(write_extract_v5(d / "o.mat", FP, TR), 0.6)
    return (lambda: extract.read(p)), p


def extract_v5_transposed_traces(d):
    p = d / "o.mat"
    scipy.io.savemat(p, {"spatial_weights": np.moveaxis(FP, 0, -1), "temporal_weights": TR})  # [N T]
    return (lambda: extract.read(p)), p


def extract_v5_nhw_footprints(d):
    p = d / "o.mat"
    scipy.io.savemat(p, {"spatial_weights": FP, "temporal_weights": TR.T})
    return (lambda: extract.read(p)), p


def extract_v5_empty_footprint(d):
    fp = FP.copy()
    fp[2] = 0
    p = write_extract_v5(d / "o.mat", fp, TR)
    return (lambda: extract.read(p)), p


def extract_v5_image_size_mismatch(d):
    p = write_extract_v5(d / "o.mat", FP, TR, image=np.zeros((9, 8)))
    return (lambda: extract.read(p)), p


def extract_v5_3d_traces(d):
    p = d / "o.mat"
    scipy.io.savemat(p, {"spatial_weights": np.moveaxis(FP, 0, -1), "temporal_weights": np.ones((20, 3, 2))})
    return (lambda: extract.read(p)), p


def extract_movie_size_mismatch(d):
    p = write_extract_v5(d / "o.mat", FP, TR)
    m = d / "m.npy"
    np.save(m, np.zeros((20, 8, 10), np.int16))
    return (lambda: open_candidates(p, movie=m)), p


def extract_movie_length_mismatch(d):
    p = write_extract_v5(d / "o.mat", FP, TR)
    m = d / "m.npy"
    np.save(m, np.zeros((21, 8, 9), np.int16))
    return (lambda: open_candidates(p, movie=m)), p


def extract_non_utf8_file_name(d):
    p = Path(os.fsdecode(os.path.join(os.fsencode(d), b"caf\xe9.mat")))
    p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    return (lambda: open_candidates(p, format="extract")), p


# --------------------------------------------------------------------------- CaImAn
def caiman_truncated(d):
    p = truncate(write_caiman(d / "c.hdf5", FP, TR), 0.4)
    return (lambda: caiman.read(p)), p


def caiman_bad_indptr(d):
    p = write_caiman(d / "c.hdf5", FP, TR)
    with h5py.File(p, "r+") as f:
        ptr = f["estimates/A/indptr"][()]
        del f["estimates/A/indptr"]
        f["estimates/A/indptr"] = ptr[:-1]
    return (lambda: caiman.read(p)), p


def caiman_indices_out_of_range(d):
    p = write_caiman(d / "c.hdf5", FP, TR)
    with h5py.File(p, "r+") as f:
        f["estimates/A/indices"][0] = 10**6
    return (lambda: caiman.read(p)), p


def caiman_missing_C(d):
    p = write_caiman(d / "c.hdf5", FP, TR)
    with h5py.File(p, "r+") as f:
        del f["estimates/C"]
    return (lambda: caiman.read(p)), p


def caiman_gigantic_shape(d):
    p = write_caiman(d / "c.hdf5", FP, TR)
    with h5py.File(p, "r+") as f:
        f["estimates/A/shape"][...] = [10**12, 10**11]
    return (lambda: caiman.read(p)), p


def caiman_3d_dims(d):
    p = write_caiman(d / "c.hdf5", FP, TR)
    with h5py.File(p, "r+") as f:
        del f["estimates/dims"]
        f["estimates/dims"] = [8, 9, 2]
    return (lambda: caiman.read(p)), p


def caiman_idx_out_of_range(d):
    p = write_caiman(d / "c.hdf5", FP, TR, idx_components=[0, 7])
    return (lambda: caiman.read(p)), p


def caiman_nan_C(d):
    tr = TR.copy()
    tr[:, 4] = np.nan
    p = write_caiman(d / "c.hdf5", FP, tr)
    return (lambda: caiman.read(p)), p


# --------------------------------------------------------------------------- Suite2p
def _evil_stat(folder: Path, marker: Path) -> None:
    np.save(folder / "stat.npy", np.array([Evil(marker), 1], dtype=object), allow_pickle=True)


def suite2p_code_pickle_untrusted(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    _evil_stat(folder, d / "MARKER")
    return (lambda: suite2p.read(folder)), folder / "stat.npy"


def suite2p_code_pickle_trusted(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    _evil_stat(folder, d / "MARKER")
    return (lambda: suite2p.read(folder, trust=True)), folder / "stat.npy"


def suite2p_code_pickle_in_ops_trusted(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    np.save(folder / "ops.npy", np.array([Evil(d / "MARKER")], dtype=object), allow_pickle=True)
    return (lambda: suite2p.read(folder, trust=True)), folder / "ops.npy"


def suite2p_truncated_F(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    truncate(folder / "F.npy", 0.7)
    return (lambda: suite2p.read(folder, trust=True)), folder / "F.npy"


def suite2p_gigantic_declared_F(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    with open(folder / "F.npy", "wb") as fh:  # header only: declares 10^7 x 10^7 float32
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**7)})
    return (lambda: suite2p.read(folder, trust=True)), folder / "F.npy"


def suite2p_iscell_wrong_shape(d):
    folder = write_suite2p(d / "plane0", FP, TR, iscell=np.ones((5, 2)))
    return (lambda: suite2p.read(folder, trust=True)), folder / "iscell.npy"


def suite2p_pixels_outside_fov(d):
    folder = write_suite2p(d / "plane0", FP, TR, ops_extra={"Ly": 4})
    return (lambda: suite2p.read(folder, trust=True, movie=False)), folder / "stat.npy"


def suite2p_truncated_data_bin(d):
    folder = write_suite2p(d / "plane0", FP, TR, movie=MOVIE)
    truncate(folder / "data.bin", 0.5)
    return (lambda: suite2p.read(folder, trust=True)), folder / "data.bin"


def suite2p_object_F(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    np.save(folder / "F.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return (lambda: suite2p.read(folder, trust=True)), folder / "F.npy"


# --------------------------------------------------------------------------- movies
def movie_tiff_truncated(d):
    p = d / "m.tif"
    tifffile.imwrite(p, MOVIE, compression="zlib")
    truncate(p, 0.5)
    return (lambda: open_movie(p).compute()), p


def movie_tiff_uncompressed_truncated(d):
    p = d / "m.tif"
    tifffile.imwrite(p, MOVIE)
    truncate(p, 0.3)  # into the pixel data (the page directories follow the data)
    return (lambda: open_movie(p)), p


def movie_npy_2d(d):
    p = d / "m.npy"
    np.save(p, MOVIE[0])
    return (lambda: open_movie(p)), p


def movie_npy_pickle(d):
    p = d / "m.npy"
    np.save(p, np.array([Evil(d / "MARKER")], dtype=object), allow_pickle=True)
    return (lambda: open_movie(p)), p


def movie_h5_zero_frames(d):
    p = write_h5_movie(d / "m.h5", MOVIE[:0])
    return (lambda: open_movie(p)), p


def movie_h5_gigantic_frames(d):
    p = d / "m.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("mov", shape=(10, 10**6, 10**6), dtype="u2", chunks=(1, 64, 64))
    return (lambda: open_movie(p)), p


def movie_h5_string_dataset(d):
    p = d / "m.h5"
    with h5py.File(p, "w") as f:
        f["mov"] = np.array([[["a"]]], dtype="S1")
    return (lambda: open_movie(p, dataset="mov")), p


def movie_data_bin_wrong_shape(d):
    p = d / "data.bin"
    MOVIE.astype(np.int16).tofile(p)
    return (lambda: open_movie(p, shape=(21, 8, 9))), p


# --------------------------------------------------------------------------- NWB
def nwb_truncated(d):
    pytest.importorskip("pynwb")
    p = truncate(write_nwb(d / "s.nwb", FP, TR), 0.5)
    return (lambda: open_candidates(p, format="nwb")), p


def nwb_not_hdf5(d):
    p = d / "s.nwb"
    p.write_bytes(b"\x00" * 100)
    return (lambda: open_candidates(p, format="nwb")), p


# --------------------------------------------------------------------------- JSON readers
def neurofinder_not_utf8(d):
    p = d / "regions.json"
    p.write_bytes(b'[{"id": "\xff\xfe", "coordinates": [[1, 2]]}]')
    return (lambda: neurofinder.read(p, movie=MOVIE)), p


def neurofinder_truncated_json(d):
    p = d / "regions.json"
    p.write_text(json.dumps([{"id": 1, "coordinates": [[1, 2], [2, 2]]}])[:25])
    return (lambda: neurofinder.read(p, movie=MOVIE)), p


def neurofinder_fractional_coordinates(d):
    p = d / "regions.json"
    p.write_text(json.dumps([{"id": 1, "coordinates": [[1.5, 2]]}]))
    return (lambda: neurofinder.read(p, movie=MOVIE)), p


def neurofinder_empty_list(d):
    p = d / "regions.json"
    p.write_text("[]")
    return (lambda: neurofinder.read(p, movie=MOVIE)), p


def croissant_missing_fields(d):
    p = d / "rois.json"
    p.write_text(json.dumps([{"coo_rows": [1], "coo_cols": [1]}]))
    return (lambda: croissant.read(p)), p


def croissant_gigantic_image_shape(d):
    p = d / "rois.json"
    rec = {"coo_rows": [1], "coo_cols": [1], "coo_data": [1.0], "image_shape": [10**6, 10**6], "trace": [1, 2], "roi_id": 1}
    p.write_text(json.dumps([rec]))
    return (lambda: croissant.read(p)), p


def croissant_nan_trace(d):
    p = d / "rois.json"
    rec = {"coo_rows": [1], "coo_cols": [1], "coo_data": [1.0], "image_shape": [4, 4], "trace": [1, float("nan")], "roi_id": 1}
    p.write_text(json.dumps([rec]))
    return (lambda: croissant.read(p)), p


# --------------------------------------------------------------------------- more corruptions
def extract_v73_inconsistent_sparse(d):
    p = d / "o.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        g = f.create_group("spatial_weights")
        g.attrs["MATLAB_sparse"] = np.uint64(72)
        g["data"] = np.ones(3)
        g["ir"] = np.array([0, 500, 2], np.uint64)  # row 500 of 72
        g["jc"] = np.array([0, 1, 2, 3], np.uint64)
        f["temporal_weights"] = TR
        f["max_image"] = np.zeros((9, 8))
    _mat73_finish(p)
    return (lambda: extract.read(p)), p


def suite2p_truncated_stat_pickle(d):
    folder = write_suite2p(d / "plane0", FP, TR)
    truncate(folder / "stat.npy", 0.6)
    return (lambda: suite2p.read(folder, trust=True)), folder / "stat.npy"


def nwb_nan_traces(d):
    pytest.importorskip("pynwb")
    tr = TR.copy()
    tr[1, 1] = np.nan
    p = write_nwb(d / "s.nwb", FP, tr)
    return (lambda: open_candidates(p)), p


def neurofinder_duplicate_ids(d):
    p = d / "regions.json"
    p.write_text(json.dumps([{"id": 4, "coordinates": [[1, 2]]}, {"id": 4, "coordinates": [[3, 3]]}]))
    return (lambda: neurofinder.read(p, movie=MOVIE)), p


def caiman_zero_frame_rate(d):
    p = write_caiman(d / "c.hdf5", FP, TR, fr=0.0)
    return (lambda: caiman.read(p)), p


def suite2p_nan_frame_rate(d):
    folder = write_suite2p(d / "plane0", FP, TR, fs=float("nan"))
    return (lambda: suite2p.read(folder, trust=True)), folder / "ops.npy"


def extract_v5_complex_traces(d):
    p = d / "o.mat"
    scipy.io.savemat(p, {"spatial_weights": np.moveaxis(FP, 0, -1), "temporal_weights": TR.T * (1 + 1j)})
    return (lambda: extract.read(p)), p


def movie_h5_non_utf8_dataset_name(d):
    p = d / "m.h5"
    with h5py.File(p, "w") as f:
        f[b"mov\xff"] = MOVIE
    return (lambda: open_movie(p)), p


# --------------------------------------------------------------------------- benchmark, dispatcher
def benchmark_choices_length(d):
    p = d / "b.mat"
    with h5py.File(p, "w") as f:
        f["metrics"] = np.ones((5, 76), np.float32)
        f["x_choices"] = np.ones((4, 1), np.float32)
    return (lambda: read_actsort_benchmark(p)), p


def benchmark_nan_metrics(d):
    p = d / "b.mat"
    with h5py.File(p, "w") as f:
        m = np.ones((5, 76), np.float32)
        m[2, 3] = np.nan
        f["metrics"] = m
        f["x_choices"] = np.ones((5, 1), np.float32)
    return (lambda: read_actsort_benchmark(p)), p


def benchmark_wrong_width(d):
    p = d / "b.mat"
    with h5py.File(p, "w") as f:
        f["metrics"] = np.ones((5, 70), np.float32)
    return (lambda: read_actsort_benchmark(p)), p


def dispatch_unknown_format(d):
    p = d / "x.dat"
    p.write_bytes(b"\x00\x01\x02")
    return (lambda: open_candidates(p)), p


def describe_truncated_hdf5(d):
    p = d / "x.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return (lambda: describe(p)), p


CASES = [v for k, v in dict(globals()).items() if callable(v) and k.split("_")[0] in {
    "extract", "caiman", "suite2p", "movie", "nwb", "neurofinder", "croissant", "benchmark", "dispatch", "describe",
} and getattr(v, "__module__", None) == __name__ and not isinstance(v, type)]


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30
    readers = {c.__name__.split("_")[0] for c in CASES}
    assert readers >= {"extract", "caiman", "suite2p", "movie", "nwb", "neurofinder", "croissant", "benchmark"}


def _listing(root: Path) -> set[str]:
    return {os.fsdecode(p.relative_to(root)) + f":{p.stat().st_size}" for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input(tmp_path, case):
    call, named = case(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    assert_one_sentence(msg)
    shown = os.fsencode(named.name).decode("utf-8", "backslashreplace")  # non-UTF-8 bytes shown as \xNN
    assert shown in msg, f"message does not name {shown}: {msg}"
    assert _listing(tmp_path) == before, "the reader wrote or changed files"
    assert not (tmp_path / "MARKER").exists(), "a pickle ran code"


def test_the_evil_pickle_really_runs_code_with_plain_numpy(tmp_path):
    """Guards the catalogue: the pickle used above does create its marker when loaded naively."""
    p = tmp_path / "evil.npy"
    np.save(p, np.array([Evil(tmp_path / "NAIVE")], dtype=object), allow_pickle=True)
    np.load(p, allow_pickle=True)
    assert (tmp_path / "NAIVE").exists()


def _writers():
    return {
        "caiman": (lambda d: write_caiman(d / "c.hdf5", FP, TR, TR * 0.1, idx_components=[0, 2]), "caiman"),
        "extract-v7.3": (lambda d: write_extract_v73(d / "o.mat", FP, TR, np.ones((8, 9), np.float32)), "extract"),
        "extract-v5": (lambda d: write_extract_v5(d / "o.mat", FP, TR, np.ones((8, 9))), "extract"),
        "nwb": (lambda d: write_nwb(d / "s.nwb", FP, TR), "nwb"),
        "tiff": (lambda d: tifffile.imwrite(d / "m.tif", MOVIE, compression="zlib") or d / "m.tif", "movie"),
    }


@pytest.mark.parametrize("fmt", list(_writers()))
def test_random_byte_corruption_gives_data_or_one_sentence(tmp_path, fmt):
    """Overwrite random byte runs: the reader returns (damage in pixel data goes unseen) or raises one sentence."""
    if fmt == "nwb":
        pytest.importorskip("pynwb")
    write, kind = _writers()[fmt]
    raw = Path(write(tmp_path)).read_bytes()
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))  # reproducible across runs
    for i in range(12):
        damaged = bytearray(raw)
        pos = int(rng.integers(0, len(raw) - 16))
        damaged[pos : pos + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        p = tmp_path / f"damaged{i}{'.tif' if fmt == 'tiff' else '.bin'}"
        p.write_bytes(bytes(damaged))
        try:
            open_movie(p).compute() if kind == "movie" else open_candidates(p, format=kind)
        except InputError as exc:
            assert_one_sentence(str(exc))
            assert p.name in str(exc)
