"""Exports round-trip and never destroy the original file.

The Suite2p plane folder, the CaImAn results file and the NWB file are written
here by fixtures, small, with numpy / h5py / pynwb in the layouts those tools use.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from actsort_nb import InputError
from actsort_nb.cli import main
from actsort_nb.store import (
    LabelLog,
    export,
    export_caiman,
    export_csv,
    export_hdf5,
    export_nwb,
    export_suite2p,
    label_table,
    read_labels,
)

N = 12


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in Path(folder).iterdir() if ".tmp-" in p.name]


@pytest.fixture
def log_path(tmp_path):
    """A label log with two annotators, a retraction and a relabel, over N candidates.

    The ids are the source's own (here the ROI index), as the panel records them.
    """
    path = tmp_path / "labels.sqlite"
    with LabelLog(path, annotator="ana", dataset="fixture") as ana, \
            LabelLog(path, annotator="ben", dataset="fixture") as ben:
        ana.record(0, 1, candidate_id="0", strategy="dcal", p_cell=0.7)
        ana.record(1, 0, candidate_id="1", strategy="dcal", p_cell=0.4)
        ana.record(2, 1, candidate_id="2", strategy="random")
        ana.retract()                                      # 2 back to unlabelled
        ben.record(3, 0, candidate_id="3", strategy="cal", p_cell=0.55)
        ben.record(1, 1, candidate_id="1", strategy="cal")  # ben overrules ana on 1
        ana.record(5, 1, candidate_id="5")
    return path


@pytest.fixture
def p_cell():
    return np.linspace(0.05, 0.95, N)


EXPECTED_HUMAN = np.array([1, 1, -1, 0, -1, 1] + [-1] * (N - 6), dtype=np.int8)


def _expected_final(p):
    return np.where(EXPECTED_HUMAN >= 0, EXPECTED_HUMAN, (p >= 0.5).astype(np.int8)).astype(np.int8)


# -- the label table ----------------------------------------------------------------------

def test_label_table_humans_win_and_carry_provenance(log_path, p_cell):
    t = label_table(log_path, p_cell=p_cell)
    assert list(t.index) == list(range(N))
    np.testing.assert_array_equal(t["human_label"], EXPECTED_HUMAN)
    np.testing.assert_array_equal(t["label"], _expected_final(p_cell))
    assert t.loc[0, "p_cell"] == p_cell[0]   # exported P(cell) is the model's now, not the log's
    assert t["source"].tolist()[:6] == ["human", "human", "model", "human", "model", "human"]
    assert t.loc[1, ["annotator", "strategy", "candidate_id"]].tolist() == ["ben", "cal", "1"]
    assert t.loc[2, ["annotator", "strategy"]].tolist() == ["", ""]          # retracted: no provenance
    assert datetime.fromisoformat(t.loc[5, "time"]).tzinfo is not None
    only_ana = label_table(log_path, n=N, annotator="ana")
    assert only_ana["human_label"].tolist()[:6] == [1, 0, -1, -1, -1, 1]
    assert set(only_ana["source"]) == {"human", "none"}
    cons = label_table(log_path, n=N, annotator="consensus")     # ana 0 vs ben 1 on candidate 1: a tie
    assert cons["human_label"].tolist()[:6] == [1, 0, -1, 0, -1, 1]
    assert label_table(log_path, n=N, annotator="consensus", ties="cell")["human_label"][1] == 1


def test_label_table_refuses_bad_input(log_path, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        label_table(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()          # looking did not create a log
    with pytest.raises(InputError, match="p_cell has shape"):
        label_table(log_path, n=N, p_cell=np.ones(3))
    with pytest.raises(InputError, match="probabilities in \\[0, 1\\]"):
        label_table([1, 0], p_cell=[2.0, 0.1])
    with pytest.raises(InputError, match="1-D array"):
        label_table([1, 5, 0])
    with pytest.raises(InputError, match="candidate 5, but n=3"):
        label_table(log_path, n=3)
    with pytest.raises(InputError, match="p_cell has 3 values but .* candidate 5"):
        label_table(log_path, p_cell=np.ones(3) / 2)       # the mistake is p_cell's, not the log's
    with pytest.raises(InputError, match="1-D"):
        label_table(log_path, p_cell=np.ones((1, N)) / 2)
    with pytest.raises(InputError, match="No annotator 'anna'.*'ana', 'ben'"):
        label_table(log_path, n=N, annotator="anna")       # a typo would export no human label at all
    for bad in (2, 0, -0.5, "0.5", True):
        with pytest.raises(InputError, match="threshold"):
            label_table([1, -1], p_cell=[0.9, 0.6], threshold=bad)


def test_a_folder_target_is_refused_and_a_failed_export_keeps_no_backup(log_path, nwb_file, tmp_path):
    for fmt in ("csv", "hdf5"):
        with pytest.raises(InputError, match="is a folder"):
            export(log_path, fmt, tmp_path)
    out = nwb_file.with_name("copy.nwb")
    export_nwb(log_path, nwb_file, out=out, n=N)
    before = sorted(p.name for p in nwb_file.parent.glob("*.nwb"))
    with pytest.raises(InputError, match="ROIs but n=9"):
        export_nwb(log_path, nwb_file, out=out, n=9)       # refused: the earlier copy stays, no backup of it
    assert sorted(p.name for p in nwb_file.parent.glob("*.nwb")) == before


# -- CSV and HDF5 ---------------------------------------------------------------------------

def test_csv_round_trip(log_path, p_cell, tmp_path):
    target = tmp_path / "out" / "labels.csv"
    target.parent.mkdir()
    written = export_csv(log_path, target, p_cell=p_cell)
    assert written.path == target and written.backup is None
    back = read_labels(target)
    pd.testing.assert_frame_equal(back, label_table(log_path, p_cell=p_cell), check_dtype=False,
                                  check_index_type=False)
    assert back["label"].dtype == np.int8
    again = export_csv(log_path, target)                     # a second export keeps the first as backup
    assert again.backup is not None and read_labels(again.backup)["p_cell"].notna().all()
    assert read_labels(target)["p_cell"].isna().all()
    assert _leftovers(target.parent) == []


def test_hdf5_round_trip_with_the_raw_log(log_path, p_cell, tmp_path):
    target = tmp_path / "labels.h5"
    export_hdf5(log_path, target, p_cell=p_cell)
    back = read_labels(target)
    expected = label_table(log_path, p_cell=p_cell)
    pd.testing.assert_frame_equal(back[expected.columns], expected, check_dtype=False, check_index_type=False)
    with h5py.File(target, "r") as h, LabelLog(log_path) as log:
        events = log.events()
        assert h.attrs["format"] == "actsort_nb.labels"
        assert h["events/id"][()].tolist() == [e.id for e in events]
        assert [k.decode() for k in h["events/kind"][()]] == [e.kind for e in events]
        assert h["events/retracts"][()].tolist() == [-1 if e.retracts is None else e.retracts for e in events]
        assert '"n_human": 4' in h.attrs["provenance"]


# -- Suite2p ----------------------------------------------------------------------------------

@pytest.fixture
def suite2p_plane(tmp_path):
    """suite2p/plane0 with F.npy, Fneu.npy, spks.npy and Suite2p's own iscell.npy."""
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("F", "Fneu", "spks"):
        np.save(plane / f"{name}.npy", rng.random((N, 50), dtype=np.float32))
    iscell = np.column_stack([(np.arange(N) % 3 == 0).astype(np.float64), rng.random(N)])
    np.save(plane / "iscell.npy", iscell)
    return plane


def test_suite2p_backs_up_and_round_trips(log_path, p_cell, suite2p_plane):
    original = np.load(suite2p_plane / "iscell.npy")
    digest = _digest(suite2p_plane / "iscell.npy")
    written = export_suite2p(log_path, suite2p_plane)
    assert written.path == suite2p_plane / "iscell.npy"
    assert written.backup.name.startswith("iscell.actsort-backup-") and written.backup.suffix == ".npy"
    assert _digest(written.backup) == digest                     # the original, byte for byte
    new = np.load(written.path, allow_pickle=False)
    assert new.shape == (N, 2) and new.dtype == np.float64
    decided = EXPECTED_HUMAN >= 0
    np.testing.assert_array_equal(new[decided, 0], EXPECTED_HUMAN[decided])
    np.testing.assert_array_equal(new[~decided], original[~decided])  # nobody decided: Suite2p's row kept
    np.testing.assert_array_equal(new[:, 1], original[:, 1])
    back = read_labels(suite2p_plane)
    np.testing.assert_array_equal(back["label"], new[:, 0].astype(np.int8))
    # with the model's P(cell): the undecided follow the model, column 1 holds P(cell)
    first_export = _digest(written.path)
    second = export_suite2p(log_path, suite2p_plane / "iscell.npy", p_cell=p_cell)
    assert second.backup != written.backup and _digest(second.backup) == first_export
    back = read_labels(suite2p_plane / "iscell.npy")
    np.testing.assert_array_equal(back["label"], _expected_final(p_cell))
    np.testing.assert_allclose(back["p_cell"], p_cell)
    assert len(list(suite2p_plane.glob("iscell.actsort-backup-*.npy"))) == 2
    assert _leftovers(suite2p_plane) == []


def test_suite2p_without_iscell_uses_F_for_the_count(log_path, suite2p_plane):
    (suite2p_plane / "iscell.npy").unlink()
    written = export_suite2p(log_path, suite2p_plane)
    assert written.backup is None
    new = np.load(written.path)
    assert new.shape == (N, 2)
    np.testing.assert_array_equal(new[:, 0], np.maximum(EXPECTED_HUMAN, 0))
    with pytest.raises(InputError, match=f"holds {N} ROIs but n=5"):
        export_suite2p(log_path, suite2p_plane, n=5)


def test_suite2p_refuses_mismatch_and_pickles_without_touching_anything(log_path, suite2p_plane, tmp_path):
    np.save(suite2p_plane / "iscell.npy", np.zeros((4, 2)))
    digest = _digest(suite2p_plane / "iscell.npy")
    with pytest.raises(InputError, match=r"has no ROI with the id\(s\) \['5'\]"):
        export_suite2p(log_path, suite2p_plane)
    with pytest.raises(InputError, match="hold 3 candidates but n=4"):
        export_suite2p([1, 0, 1], suite2p_plane)
    assert _digest(suite2p_plane / "iscell.npy") == digest
    np.save(suite2p_plane / "iscell.npy", np.array([{"evil": 1}] * N, dtype=object), allow_pickle=True)
    pickled = _digest(suite2p_plane / "iscell.npy")
    with pytest.raises(InputError, match="pickle"):
        export_suite2p(log_path, suite2p_plane)
    assert _digest(suite2p_plane / "iscell.npy") == pickled
    assert list(suite2p_plane.glob("*backup*")) == [] and _leftovers(suite2p_plane) == []
    assert digest != pickled
    with pytest.raises(InputError, match="neither a plane folder"):
        export_suite2p(log_path, tmp_path / "no-such-plane")


def test_a_crash_while_writing_leaves_the_original(log_path, suite2p_plane, monkeypatch):
    digest = _digest(suite2p_plane / "iscell.npy")

    def dies_half_way(fh, arr, allow_pickle=False):
        fh.write(b"\x93NUMPY half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        export_suite2p(log_path, suite2p_plane)
    monkeypatch.undo()
    assert _digest(suite2p_plane / "iscell.npy") == digest
    assert _leftovers(suite2p_plane) == []


# -- CaImAn ---------------------------------------------------------------------------------------

@pytest.fixture
def caiman_file(tmp_path):
    """A CaImAn results file as cnm.save() writes it: estimates/A as CSC parts, C, idx lists."""
    import scipy.sparse

    rng = np.random.default_rng(1)
    A = scipy.sparse.random(64, N, density=0.1, format="csc", random_state=1, dtype=np.float32)
    path = tmp_path / "caiman_results.hdf5"
    with h5py.File(path, "w") as h:
        est = h.create_group("estimates")
        for part in ("data", "indices", "indptr"):
            est.create_dataset(f"A/{part}", data=getattr(A, part))
        est.create_dataset("A/shape", data=np.array(A.shape))
        est.create_dataset("C", data=rng.random((N, 30)))
        est.create_dataset("idx_components", data=np.array([0, 2, 4, 6, 8, 10]))
        est.create_dataset("idx_components_bad", data=np.array([1, 3, 5, 7, 9, 11]))
        h.create_dataset("dims", data=np.array([8, 8]))
        h.create_dataset("params/data/fr", data=30.0)
    return path


def test_caiman_writes_a_copy_and_round_trips(log_path, p_cell, caiman_file):
    digest = _digest(caiman_file)
    written = export_caiman(log_path, caiman_file)
    assert written.path == caiman_file.with_name("caiman_results.actsort.hdf5") and written.backup is None
    assert _digest(caiman_file) == digest                         # the original is never written
    back = read_labels(written.path)
    prior = np.array([1, 0] * (N // 2), dtype=np.int8)
    np.testing.assert_array_equal(back["label"], np.where(EXPECTED_HUMAN >= 0, EXPECTED_HUMAN, prior))
    with h5py.File(written.path, "r") as h, h5py.File(caiman_file, "r") as o:
        np.testing.assert_array_equal(h["estimates/C"][()], o["estimates/C"][()])   # the rest is a copy
        assert h["estimates/idx_components"].dtype == np.int64
        assert "actsort_nb_export" in h.attrs
    out = caiman_file.with_name("sorted.hdf5")
    export(log_path, "caiman", caiman_file, out=out, p_cell=p_cell)
    np.testing.assert_array_equal(read_labels(out)["label"], _expected_final(p_cell))
    again = export_caiman(log_path, caiman_file, out=out)
    assert again.backup is not None and _digest(caiman_file) == digest
    assert _leftovers(caiman_file.parent) == []


def test_caiman_none_indices_and_refusals(log_path, caiman_file, tmp_path):
    with h5py.File(caiman_file, "r+") as h:       # CaImAn stores None as the string 'NoneType'
        del h["estimates/idx_components"], h["estimates/idx_components_bad"]
        h["estimates/idx_components"] = "NoneType"
        h["estimates/idx_components_bad"] = "NoneType"
    written = export_caiman(log_path, caiman_file)
    np.testing.assert_array_equal(read_labels(written.path)["label"], EXPECTED_HUMAN)  # undecided in neither
    with pytest.raises(InputError, match="is the original file"):
        export_caiman(log_path, caiman_file, out=caiman_file)
    text = tmp_path / "not.hdf5"
    text.write_text("no")
    with pytest.raises(InputError, match="not an HDF5 file"):
        export_caiman(log_path, text)
    with pytest.raises(InputError, match=f"holds {N} components but n=3"):
        export_caiman(log_path, caiman_file, n=3)


# -- NWB ------------------------------------------------------------------------------------------

@pytest.fixture
def nwb_file(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    from pynwb.ophys import ImageSegmentation, OpticalChannel

    nwb = pynwb.NWBFile(session_description="fixture", identifier="actsort-test",
                        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="microscope")
    channel = OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0)
    plane = nwb.create_imaging_plane(name="plane0", optical_channel=channel, description="V1",
                                     device=device, excitation_lambda=920.0, imaging_rate=30.0,
                                     indicator="GCaMP6f", location="V1")
    seg = ImageSegmentation()
    nwb.create_processing_module(name="ophys", description="ophys").add(seg)
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="ROIs", imaging_plane=plane)
    for i in range(N):
        mask = np.zeros((8, 8), dtype=np.float32)
        mask[i % 8, (3 * i) % 8] = 1.0
        ps.add_roi(image_mask=mask)
    path = tmp_path / "session.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_nwb_adds_columns_to_a_copy_and_round_trips(log_path, p_cell, nwb_file):
    from pynwb import NWBHDF5IO

    digest = _digest(nwb_file)
    written = export_nwb(log_path, nwb_file, p_cell=p_cell)
    assert written.path == nwb_file.with_name("session.actsort.nwb")
    assert _digest(nwb_file) == digest
    back = read_labels(written.path)
    np.testing.assert_array_equal(back["label"], _expected_final(p_cell))
    np.testing.assert_allclose(back["p_cell"], p_cell)
    assert back["source"].tolist()[:3] == ["human", "human", "model"]
    assert back["annotator"].tolist()[:2] == ["ana", "ben"]
    with NWBHDF5IO(str(written.path), "r") as io:           # still a valid NWB file for pynwb
        ps = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert len(ps.id) == N and "image_mask" in ps.colnames and "actsort_label" in ps.colnames
    with NWBHDF5IO(str(nwb_file), "r") as io:
        ps = io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert "actsort_label" not in ps.colnames
    with pytest.raises(InputError, match="earlier export"):
        export_nwb(log_path, written.path, out=nwb_file.with_name("twice.nwb"))
    assert not nwb_file.with_name("twice.nwb").exists()
    assert _leftovers(nwb_file.parent) == []


# -- CLI -------------------------------------------------------------------------------------------

def test_cli_export_every_format(log_path, suite2p_plane, caiman_file, nwb_file, tmp_path, capsys, p_cell):
    np.save(tmp_path / "p.npy", p_cell)
    assert main(["export", str(log_path), "--format", "csv", "--target", str(tmp_path / "l.csv"),
                 "--n", str(N)]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "l.csv")["label"], EXPECTED_HUMAN)
    assert main(["export", str(log_path), "--format", "hdf5", "--target", str(tmp_path / "l.h5"),
                 "--p-cell", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "l.h5")["label"], _expected_final(p_cell))
    assert main(["export", str(log_path), "--format", "suite2p", "--target", str(suite2p_plane)]) == 0
    assert "backed up to" in capsys.readouterr().out
    assert main(["export", str(log_path), "--format", "caiman", "--target", str(caiman_file),
                 "--out", str(tmp_path / "c.hdf5"), "--annotator", "ana"]) == 0
    assert read_labels(tmp_path / "c.hdf5")["label"].tolist()[:2] == [1, 0]
    assert main(["export", str(log_path), "--format", "nwb", "--target", str(nwb_file)]) == 0
    assert (read_labels(nwb_file.with_name("session.actsort.nwb"))["label"].to_numpy() == EXPECTED_HUMAN).all()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing.sqlite"), "--format", "csv", "--target", "x.csv"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(log_path), "--format", "xls", "--target", "x"])


def test_read_labels_refuses_unknown_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "nothing.h5")
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as h:
        h["x"] = 1
    with pytest.raises(InputError, match="no known labels layout"):
        read_labels(odd)
    with pytest.raises(InputError, match="'format'"):
        read_labels(odd, format="xls")


def test_caiman_indices_out_of_range_are_refused(log_path, caiman_file):
    with h5py.File(caiman_file, "r+") as h:
        del h["estimates/idx_components"]
        h["estimates/idx_components"] = np.array([0, 2, 99])
    digest = _digest(caiman_file)
    with pytest.raises(InputError, match="indices outside 0..11"):
        export_caiman(log_path, caiman_file)
    with pytest.raises(InputError, match="indices outside 0..11"):
        read_labels(caiman_file)
    assert _digest(caiman_file) == digest
    assert not caiman_file.with_name("caiman_results.actsort.hdf5").exists()


def test_non_numeric_p_cell_and_a_missing_file_are_one_sentence(tmp_path):
    from actsort_nb.store import LabelLog, label_table, read_labels

    with pytest.raises(InputError, match="p_cell must hold numbers"):
        label_table([1, 0, -1], p_cell=["a", "b", "c"])
    log = LabelLog(tmp_path / "l.sqlite", annotator="ana")
    with pytest.raises(InputError, match="p_cell"):
        log.record_many([0, 1], [1, 0], p_cell=["x", 0.5])
    assert log.history() == []
    log.close()
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "missing.csv")


def test_labels_are_placed_by_candidate_id_and_foreign_ids_refused(nwb_file, suite2p_plane, tmp_path):
    path = tmp_path / "reversed.sqlite"
    with LabelLog(path, annotator="ana") as log:
        for k, lab in ((0, 1), (2, 0), (5, 1)):
            log.record(k, lab, candidate_id=str(N - 1 - k))  # a sort set in the reverse of the file's order
    table = read_labels(export_nwb(path, nwb_file, out=tmp_path / "placed.nwb").path)
    placed = table["label"].to_numpy()
    assert placed[N - 1] == 1 and placed[N - 3] == 0 and placed[N - 6] == 1
    assert (np.delete(placed, [N - 1, N - 3, N - 6]) == -1).all()
    foreign = tmp_path / "foreign.sqlite"
    with LabelLog(foreign, annotator="ana") as log:
        log.record(0, 1, candidate_id="1000")
    digest = _digest(suite2p_plane / "iscell.npy")
    with pytest.raises(InputError, match=r"has no ROI with the id\(s\) \['1000'\]"):
        export_suite2p(foreign, suite2p_plane)
    assert _digest(suite2p_plane / "iscell.npy") == digest


def test_a_second_suite2p_export_takes_undecided_rows_from_suite2p_not_from_the_first(suite2p_plane, tmp_path):
    suite2p = np.load(suite2p_plane / "iscell.npy")
    path = tmp_path / "undo.sqlite"
    with LabelLog(path, annotator="ana") as log:
        log.record(4, 1 - int(suite2p[4, 0]), candidate_id="4")  # a slip...
        export_suite2p(log, suite2p_plane)
        assert np.load(suite2p_plane / "iscell.npy")[4, 0] == 1 - suite2p[4, 0]
        log.retract()                                              # ...undone
        log.record(7, 1, candidate_id="7")
        export_suite2p(log, suite2p_plane)
    again = np.load(suite2p_plane / "iscell.npy")
    np.testing.assert_array_equal(again[4], suite2p[4])
    assert again[7, 0] == 1
    np.testing.assert_array_equal(np.delete(again, 7, axis=0), np.delete(suite2p, 7, axis=0))
    # Suite2p re-run (a new iscell.npy): that file is the new original
    fresh = suite2p.copy()
    fresh[:, 0] = 1 - fresh[:, 0]
    np.save(suite2p_plane / "iscell.npy", fresh)
    with LabelLog(path, annotator="ana") as log:
        export_suite2p(log, suite2p_plane)
    third = np.load(suite2p_plane / "iscell.npy")
    np.testing.assert_array_equal(np.delete(third, 7, axis=0), np.delete(fresh, 7, axis=0))


def test_an_export_of_the_log_alone_covers_every_candidate_the_panel_recorded(tmp_path):
    path = tmp_path / "n.sqlite"
    with LabelLog(path, annotator="ana") as log:
        log.n_candidates = 20
        log.record(3, 1, candidate_id="3")
        with pytest.raises(InputError, match="written for 20 candidates"):
            log.n_candidates = 21
    assert main(["export", str(path), "--format", "csv", "--target", str(tmp_path / "all.csv")]) == 0
    table = read_labels(tmp_path / "all.csv")
    assert len(table) == 20 and table["label"].tolist() == [-1, -1, -1, 1] + [-1] * 16


def test_a_results_file_given_as_csv_or_hdf5_target_is_not_replaced(log_path, caiman_file, nwb_file, tmp_path):
    for fmt, target in (("hdf5", caiman_file), ("csv", nwb_file)):
        digest = _digest(target)
        with pytest.raises(InputError, match="is not a labels file written by actsort_nb"):
            export(log_path, fmt, target)
        assert _digest(target) == digest
    again = tmp_path / "labels.h5"
    export(log_path, "hdf5", again)
    export(log_path, "hdf5", again)  # an earlier export is replaced (with a backup)
    with pytest.raises(InputError, match="not an NWB file"):
        export_nwb(log_path, caiman_file, out=tmp_path / "x.nwb")


def test_write_protected_targets_are_one_sentence_and_modes_are_kept(log_path, suite2p_plane, tmp_path):
    import os
    import stat

    iscell = suite2p_plane / "iscell.npy"
    os.chmod(iscell, 0o664)
    export_suite2p(log_path, suite2p_plane)
    assert stat.S_IMODE(os.stat(iscell).st_mode) == 0o664  # a group-shared file stays group-writable
    if os.geteuid() != 0:  # root may write anything: the check below needs a plain user
        os.chmod(iscell, 0o444)
        with pytest.raises(InputError, match="write-protected"):
            export_suite2p(log_path, suite2p_plane)
