"""Plain arrays with named dims: the caller names every axis, the reader transposes."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from test_io_writers import make_truth

from actsort_nb import InputError
from actsort_nb.io import from_arrays


@pytest.fixture
def truth():
    return make_truth(n=4, h=9, w=7, t=30)


@pytest.mark.parametrize("dims", [("candidate", "y", "x"), ("y", "x", "candidate"), ("x", "candidate", "y")])
@pytest.mark.parametrize("trace_dims", [("candidate", "time"), ("time", "candidate")])
def test_any_named_order_round_trips(truth, dims, trace_dims):
    fp, tr, movie = truth
    fp_in = np.transpose(fp, [("candidate", "y", "x").index(d) for d in dims])
    tr_in = tr if trace_dims == ("candidate", "time") else tr.T
    ds = from_arrays(fp_in, tr_in, dims=dims, trace_dims=trace_dims, movie=movie, frame_rate=10)
    np.testing.assert_array_equal(ds.footprints.data.todense(), fp)
    np.testing.assert_array_equal(ds.traces.values, tr)
    assert isinstance(ds.movie.data, da.Array)


def test_movie_dims_and_dataarray_movie(truth):
    fp, tr, movie = truth
    ds = from_arrays(fp, tr, movie=movie.transpose(1, 2, 0), movie_dims=("y", "x", "time"))
    np.testing.assert_array_equal(ds.movie.values, movie)
    mv = xr.DataArray(movie.transpose(2, 0, 1), dims=("x", "time", "y"))
    np.testing.assert_array_equal(from_arrays(fp, tr, movie=mv).movie.values, movie)


def test_wrong_dim_names_say_which_parameter(truth):
    fp, tr, _ = truth
    with pytest.raises(InputError, match=r"dims for the footprints must be a permutation"):
        from_arrays(fp, tr, dims=("cell", "y", "x"))
    with pytest.raises(InputError, match=r"trace_dims="):
        from_arrays(fp, tr, trace_dims=("candidate",))


def test_transposed_without_naming_is_caught(truth):
    fp, tr, _ = truth
    with pytest.raises(InputError, match="look transposed"):
        from_arrays(fp, tr.T)
