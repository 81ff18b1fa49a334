"""The sorting app without a browser: actions (as the page sends them) -> learner, label log, views."""
from __future__ import annotations

import numpy as np
import pytest
from _sortset_factory import make_sortset

import actsort_nb
from actsort_nb import InputError
from actsort_nb.widgets.app import SortingApp, dataset_key, default_log_path


@pytest.fixture(scope="module")
def sortset():
    return make_sortset(40, shape=(80, 80), n_frames=300, crop=17, seed=2)


@pytest.fixture
def app(sortset, tmp_path):
    a = SortingApp(sortset, log=tmp_path / "labels.sqlite", annotator="ana", strategy="dcal", seed=0)
    yield a
    a.close()


class _Seq:
    n = 0


def act(app, kind, **kw):
    """Do what the browser does: set the `action` trait (with a fresh seq and the shown index)."""
    _Seq.n += 1
    msg = {"kind": kind, "seq": _Seq.n, "index": -1 if app.shown is None else app.shown}
    msg.update(kw)
    app.panel.action = msg
    assert app.panel.ack == _Seq.n
    return msg


def other_kernel(sortset, **kw):
    """A SortingApp as another kernel opens it: this kernel's open apps are not closed by it."""
    from actsort_nb.widgets import app as app_module

    saved = dict(app_module._OPEN)
    app_module._OPEN.clear()
    try:
        return SortingApp(sortset, **kw)
    finally:
        app_module._OPEN.clear()
        app_module._OPEN.update(saved)


def _arr(p):
    return np.frombuffer(p["data"], dtype=p["dtype"]).reshape(p["shape"])


def test_opening_shows_the_learners_query_with_buffers(app, sortset):
    assert app.errors == []
    cur = app.panel.current
    assert cur["index"] == app.shown == app.live
    assert isinstance(cur["snapshots"]["data"], bytes)
    assert cur["snapshots"]["shape"] == [5, 11, 17, 17]
    np.testing.assert_array_equal(_arr(cur["snapshots"]), sortset["snapshots"].values[app.shown])
    assert app.panel.fov["n"] == 40
    assert _arr(app.panel.map_state["labels"]).tolist() == [-1] * 40
    assert app.panel.counts["labelled"] == 0


def test_cell_click_logs_then_moves_on_then_retrains_once(app, monkeypatch):
    first = app.shown
    seen = []
    teach_calls = []
    real_teach = app.learner.teach

    def on_current(change):  # when the panel moves on, the label must already be in the log
        seen.append([(d.candidate, d.label) for d in app.log.history()])

    def counting_teach(i, label):
        teach_calls.append((i, label))
        return real_teach(i, label)

    monkeypatch.setattr(app.learner, "teach", counting_teach)
    app.panel.observe(on_current, names=["current"])
    act(app, "label", label=1)
    assert seen and seen[0] == [(first, 1)]
    assert teach_calls == [(first, True)]
    assert int(app.learner.labels[first]) == 1
    assert app.shown != first and app.labels[app.shown] == -1
    d = app.log.history()[0]
    assert (d.candidate, d.label, d.annotator, d.strategy, d.candidate_id) == (first, 1, "ana", "dcal", str(first))
    # the next payload is a new candidate, as bytes of the right shapes
    cur = app.panel.current
    assert cur["index"] == app.shown and _arr(cur["trace"]).shape == (300,)
    assert _arr(app.panel.map_state["labels"])[first] == 1
    assert app.panel.model_view["index"] == app.shown


def test_keys_down_and_undo(app):
    first = app.shown
    act(app, "label", label=1)
    second = app.shown
    act(app, "label", label=0)
    third = app.shown
    assert len({first, second, third}) == 3
    assert app.labels[second] == 0
    act(app, "undo")
    assert app.shown == second and app.live == second
    assert app.labels[second] == -1 and app.labels[first] == 1
    assert [(d.candidate, d.label) for d in app.log.history()] == [(first, 1)]
    assert [e.kind for e in app.log.events()] == ["label", "label", "retract"]
    # the candidate that was next is still the one after
    act(app, "label", label=1)
    assert app.shown == third
    assert [(d.candidate, d.label) for d in app.log.history()] == [(first, 1), (second, 1)]


def test_undo_with_nothing_to_undo_says_so(app):
    act(app, "undo")
    assert app.panel.status == "Nothing to undo."
    assert app.log.events() == []


def test_skip_moves_on_without_a_label_or_retrain(app, monkeypatch):
    first = app.shown
    monkeypatch.setattr(app.learner, "teach", lambda *a: pytest.fail("skip must not retrain"))
    act(app, "skip")
    assert app.shown != first and app.labels[first] == -1 and app.log.events() == []
    assert first in app._skipped


def test_goto_by_map_click_and_by_id_then_label(app):
    live = app.live
    target = next(i for i in range(40) if i != live)
    act(app, "goto", index=target)
    assert app.shown == target and app.panel.current["index"] == target
    act(app, "label", label=0)
    assert app.labels[target] == 0
    d = app.log.history()[-1]
    assert (d.candidate, d.strategy) == (target, "user")
    assert app.shown == live  # back to the queried candidate
    other = next(i for i in range(40) if i not in (live, target))
    act(app, "goto", id=str(app.source.id_strings[other]))
    assert app.shown == other
    act(app, "goto", id="no-such-id")
    assert "no candidate has id" in app.panel.status and app.shown == other


def test_history_prev_next_and_relabel(app):
    a = app.shown
    act(app, "label", label=1)
    b = app.shown
    act(app, "label", label=1)
    live = app.shown
    act(app, "prev")
    assert app.shown == b and app.panel.current["label"] == 1
    act(app, "prev")
    assert app.shown == a
    act(app, "next")
    assert app.shown == b
    act(app, "label", label=0)  # relabel b from history
    assert app.labels[b] == 0
    assert app.shown == live  # the newest entry is the relabel itself: back to the queried one
    assert [(d.candidate, d.label) for d in app.log.history()][-1] == (b, 0)
    act(app, "next")
    assert app.panel.status == "This is the newest candidate."


def test_stale_request_about_another_candidate_is_ignored(app):
    shown = app.shown
    act(app, "label", label=1, index=(shown + 1) % 40)
    assert app.log.events() == [] and app.shown == shown


def test_unknown_action_is_reported_not_raised(app):
    act(app, "explode")
    assert "unknown panel action" in app.panel.status


def test_plots_follow_the_decisions(app, sortset):
    counts0 = app.plots.counts.y.tolist()
    hist0 = app.plots.histogram.y.tolist()
    assert counts0 == [0, 0, 0, 0] and app.plots.accuracy.y.size == 0
    truth = sortset["is_cell"].values
    given = []
    for _ in range(12):  # the truth, so both classes come up and the model gets fitted
        given.append(int(truth[app.shown]))
        act(app, "label", label=given[-1])
    n_cell = sum(given)
    counts = app.plots.counts.y.tolist()
    assert counts[:2] == [n_cell, 12 - n_cell]
    assert counts[2] + counts[3] == 40 - 12  # the model decides every unlabelled candidate
    assert app.plots.histogram.y.sum() == 40 and app.plots.histogram.y.tolist() != hist0
    n, est = app.learner.accuracy_estimate()
    keep = np.isfinite(est)
    assert keep.any()
    np.testing.assert_array_equal(app.plots.accuracy.x, np.asarray(n)[keep])
    np.testing.assert_allclose(app.plots.accuracy.y, np.asarray(est)[keep])
    assert app.panel.counts["labelled"] == 12
    assert app.panel.map_state["has_p"] and app.panel.model_view["p_cell"] is not None


def test_controls_set_the_learner(app):
    app.plots.threshold.value = 0.8
    assert app.learner.threshold == pytest.approx(0.8)
    assert app.panel.map_state["threshold"] == pytest.approx(0.8)
    app.plots.strategy.value = "random"
    assert app.learner.strategy == "random"
    app.plots.dcal_weight.value = 0.25
    assert app.learner.dcal_weight == pytest.approx(0.25)


def test_rerunning_the_cell_resumes_with_history_and_undo(sortset, tmp_path):
    path = tmp_path / "resume.sqlite"
    app = SortingApp(sortset, log=path, annotator="ana", seed=0)
    done = []
    for lab in (1, 0, 1):
        done.append((app.shown, lab))
        act(app, "label", label=lab)
    labels = app.labels.copy()
    app.close()
    again = SortingApp(sortset, log=path, annotator="ana", seed=0)
    try:
        np.testing.assert_array_equal(again.labels, labels)
        assert again.history == [c for c, _ in done]
        assert again.live is not None and again.labels[again.live] == -1
        act(again, "undo")
        assert again.shown == done[-1][0] and again.labels[done[-1][0]] == -1
        assert [(d.candidate, d.label) for d in again.log.history()] == done[:2]
    finally:
        again.close()


def test_log_of_another_sort_set_is_refused(sortset, tmp_path):
    path = tmp_path / "x.sqlite"
    SortingApp(sortset, log=path, annotator="ana").close()
    other = make_sortset(40, shape=(80, 80), n_frames=300, crop=17, seed=9)
    with pytest.raises(InputError):
        SortingApp(other, log=path, annotator="ana")


def test_sort_is_the_lazy_top_level_entry(sortset, tmp_path):
    app = actsort_nb.sort(sortset, log=tmp_path / "s.sqlite", annotator="ana")
    try:
        assert isinstance(app, SortingApp)
        assert app.widget.children[0] is app.panel and app.widget.children[1] is app.plots
        assert "application/vnd.jupyter.widget-view+json" in app._repr_mimebundle_()
    finally:
        app.close()


def test_default_log_path_is_stable_per_sort_set(sortset):
    assert default_log_path(sortset) == default_log_path(sortset.copy())
    assert dataset_key(sortset) != dataset_key(make_sortset(40, shape=(80, 80), n_frames=300, crop=17, seed=9))


def test_not_a_sort_set_is_explained():
    with pytest.raises(InputError, match="needs a sort set"):
        SortingApp(np.zeros((3, 3)))


def test_a_sort_set_opened_lazily_from_hdf5_keeps_its_log_beside_it(tmp_path):
    from actsort_nb.preprocess import open_sortset, write_sortset

    path = write_sortset(make_sortset(20, shape=(64, 64), n_frames=200, crop=15, seed=4), tmp_path / "rec.h5")
    lazy = open_sortset(path)
    assert default_log_path(lazy) == tmp_path / "rec.labels.sqlite"
    app = SortingApp(lazy, annotator="ana", strategy="ours")
    try:
        assert app.learner.strategy == "explore"
        first = app.shown
        np.testing.assert_array_equal(_arr(app.panel.current["snapshots"]), lazy["snapshots"].values[first])
        act(app, "label", label=1)
        assert [(d.candidate, d.label) for d in app.log.history()] == [(first, 1)]
        assert (tmp_path / "rec.labels.sqlite").exists()
    finally:
        app.close()


def test_default_strategy_is_the_learners_default(sortset, tmp_path):
    import inspect

    from actsort_nb.learn import ActiveLearner

    default = inspect.signature(ActiveLearner).parameters["strategy"].default
    a = SortingApp(sortset, log=tmp_path / "d.sqlite", annotator="ana")
    try:
        assert a.learner.strategy == default
        assert a.plots.strategy.value == default
    finally:
        a.close()


def test_start_from_a_previous_recordings_labels(sortset, tmp_path):
    old = make_sortset(40, shape=(80, 80), n_frames=300, crop=17, seed=9)
    day1 = SortingApp(old, log=tmp_path / "day1.sqlite", annotator="ana", seed=0)
    try:
        for lab in (1, 0, 1, 0, 1, 0, 1, 0):
            act(day1, "label", label=lab)
        y_old = day1.log.labels(old.sizes["candidate"])
    finally:
        day1.close()
    assert (y_old >= 0).sum() == 8
    day2 = SortingApp(sortset, log=tmp_path / "day2.sqlite", annotator="ana", seed=0,
                      pretrained=(old["features"], y_old))
    try:
        assert day2.learner.fitted and (day2.labels == -1).all()  # a model before the first label
    finally:
        day2.close()
    with pytest.raises(InputError, match="pretrained"):
        SortingApp(sortset, log=tmp_path / "day3.sqlite", annotator="ana", pretrained=(old["features"],))


def test_undo_of_the_same_annotators_label_from_another_kernel_keeps_learner_and_log_in_step(sortset, tmp_path):
    # two kernels, one annotator: undo takes back that annotator's last decision, which kernel B made
    path = tmp_path / "shared.sqlite"
    a = SortingApp(sortset, log=path, annotator="ana", seed=0)
    b = other_kernel(sortset, log=path, annotator="ana", seed=1)
    try:
        a.label(1, index=5)
        b.label(0, index=9)
        act(a, "undo")
        log_labels = a.log.labels(a.n, annotator="ana")
        assert log_labels[[5, 9]].tolist() == [1, -1]
        np.testing.assert_array_equal(a.labels, log_labels)
        assert "another session" in a.panel.status
        act(a, "undo")  # now a's own label
        np.testing.assert_array_equal(a.labels, a.log.labels(a.n, annotator="ana"))
        assert (a.labels == -1).all()
    finally:
        a.close()
        b.close()


def test_relabelling_the_whole_history_walks_forward_to_the_queried_candidate(app):
    # each relabel appends to the history; the walk must still end at the live candidate (it cycled)
    done = []
    for v in (1, 0, 1):
        done.append(app.shown)
        act(app, "label", label=v)
    live = app.shown
    for _ in range(3):
        act(app, "prev")
    seen = []
    for _ in range(3):
        seen.append(app.shown)
        act(app, "label", label=1)
    assert seen == done and app.shown == live
    np.testing.assert_array_equal(app.labels, app.log.labels(app.n, annotator="ana"))


def test_bad_requests_are_one_sentence_and_record_nothing(app):
    shown = app.shown
    for bad in (-1, 7, "yes", None):
        act(app, "label", label=bad)
        assert "nothing was recorded" in app.panel.status and app.log.events() == []
    _Seq.n += 1
    app.panel.action = {"kind": "label", "seq": _Seq.n, "index": shown}  # no label key
    assert "carries no label" in app.panel.status and app.panel.ack == _Seq.n
    for seq in ("x", None):  # a malformed seq does not escape the observer
        app.panel.action = {"kind": "next", "seq": seq}
    for kw in ({}, {"index": float("nan")}, {"index": [1]}):
        act(app, "goto", **{"index": None, **kw})
        assert app.panel.status.startswith("go to needs a candidate index")
    assert app.errors == [] and app.log.events() == []


def test_strategy_change_refreshes_the_views_and_logs_who_proposed(app, tmp_path):
    for _ in range(8):
        act(app, "label", label=int(app.shown % 2))
    i = app.shown                       # proposed by dcal
    app.plots.strategy.value = "explore"  # another classifier: the learner refits
    np.testing.assert_allclose(app._p, app.learner.predict_proba())
    assert app.panel.model_view["p_cell"] == pytest.approx(app.learner.predict_proba()[app.shown])
    act(app, "label", label=1)
    assert app.log.history()[-1].candidate == i and app.log.history()[-1].strategy == "dcal"


def test_controls_show_the_learners_settings_and_a_foreign_log_object_is_refused(sortset, tmp_path):
    from actsort_nb.store import LabelLog

    a = SortingApp(sortset, log=tmp_path / "r.sqlite", annotator="ana", strategy="explore-robust", threshold=0.995)
    try:
        assert a.plots.strategy.value == "explore-robust" and a.plots.threshold.value == pytest.approx(0.995)
    finally:
        a.close()
    other = make_sortset(12, shape=(60, 60), n_frames=200, crop=15, seed=7)
    with LabelLog(tmp_path / "other.sqlite", annotator="ana", dataset=dataset_key(other)) as log:
        with pytest.raises(InputError, match="belongs to dataset"):
            SortingApp(sortset, log=log)


def test_a_sort_set_written_by_preprocess_and_reopened_uses_the_same_log(tmp_path):
    from actsort_nb.preprocess import open_sortset, preprocess
    from actsort_nb.synthetic import simulate_recording

    out = tmp_path / "s.h5"
    mem = preprocess(simulate_recording(n_cells=6, shape=(48, 48), n_frames=150, seed=0), out=out, progress=False)
    assert default_log_path(mem) == default_log_path(open_sortset(out)) == tmp_path / "s.labels.sqlite"
    moved = open_sortset(out)
    out.rename(tmp_path / "elsewhere.h5")
    with pytest.warns(UserWarning, match="is gone \\(moved\\?\\)"):
        default_log_path(moved)


def test_learner_and_log_agree_when_two_kernels_label_the_same_candidate(sortset, tmp_path):
    path = tmp_path / "shared.sqlite"
    a = SortingApp(sortset, log=path, annotator="ana", seed=0)
    b = other_kernel(sortset, log=path, annotator="ana", seed=1)
    try:
        x = a.shown
        act(a, "label", label=1)
        b.goto(index=x)
        act(b, "label", label=0)
        act(a, "undo")  # takes back b's 0: a's own 1 is effective again
        np.testing.assert_array_equal(a.labels, a.log.labels(a.n, annotator="ana"))
        assert a.labels[x] == 1
    finally:
        a.close()
        b.close()


def test_a_decision_is_taught_even_when_showing_the_next_candidate_fails(app, monkeypatch):
    real = SortingApp._show

    def broken(self, i, payload=None):
        raise OSError("the sort set file cannot be read")

    monkeypatch.setattr(SortingApp, "_show", broken)
    i = app.shown
    act(app, "label", label=1)
    assert "cannot be read" in app.panel.status
    monkeypatch.setattr(SortingApp, "_show", real)
    assert app.labels[i] == 1 == app.log.labels(app.n, annotator="ana")[i]


def test_undo_after_resuming_takes_back_the_replayed_teach(sortset, tmp_path):
    # replayed decisions are the learner's own teaches: undo pops them (it padded the history with -1 teaches)
    path = tmp_path / "resume_undo.sqlite"
    app = SortingApp(sortset, log=path, annotator="ana", seed=0)
    for k in range(6):
        app.label(k % 2)
    app.close()
    again = SortingApp(sortset, log=path, annotator="ana", seed=0)
    try:
        act(again, "undo")
        act(again, "undo")
        assert len(again.learner.history) == 4
        assert [e.index for e in again.learner.history] == [d.candidate for d in again.log.history(annotator="ana")]
        np.testing.assert_array_equal(again.labels, again.log.labels(again.n, annotator="ana"))
        x, _ = again.learner.accuracy_estimate()
        assert len(x) == 0 or max(x) <= 4
    finally:
        again.close()


def test_app_export_writes_this_annotators_sorting_as_the_panel_shows_it(sortset, tmp_path):
    from actsort_nb.store import read_labels

    path = tmp_path / "team.sqlite"
    ana = SortingApp(sortset, log=path, annotator="ana", seed=0)
    ben = SortingApp(sortset, log=path, annotator="ben", seed=0)
    try:
        early = read_labels(ana.export("csv", tmp_path / "none.csv").path)  # nothing labelled, no model
        assert (early["label"] == -1).all() and (early["source"] == "none").all()
        for _ in range(8):
            ana.label(1 if ana.shown % 2 else 0)
            ben.label(0 if ben.shown % 2 else 1)  # ben disagrees everywhere
        ana.learner.threshold = 0.6
        table = read_labels(ana.export("csv", tmp_path / "ana.csv").path)
        human = ana.labels >= 0
        np.testing.assert_array_equal(table["human_label"].to_numpy(), ana.labels)
        assert set(table["annotator"][human]) == {"ana"}
        np.testing.assert_array_equal(table["label"].to_numpy(), np.asarray(ana.learner.sorted_labels()))
        assert (table["candidate_id"].astype(str) == [str(c) for c in sortset["candidate"].values]).all()
    finally:
        ana.close()
        ben.close()


def test_label_index_and_annotator_mismatches_are_refused(app, sortset, tmp_path):
    from actsort_nb.store import LabelLog

    for bad in (2.7, True, "5", app.n, -1, np.array([1, 0])):
        with pytest.raises(InputError, match="nothing was recorded"):
            app.label(1, index=bad)
    with pytest.raises(InputError, match="nothing was recorded"):
        app.label(np.array([1, 0]))
    assert app.log.history() == []
    app.label(1, index=np.int64(3))
    assert app.labels[3] == 1
    log = LabelLog(tmp_path / "m.sqlite", annotator="ana", dataset=dataset_key(sortset))
    with pytest.raises(InputError, match="opened as 'ana'"):
        SortingApp(sortset, log=log, annotator="ben")
    log.close()


def test_two_panels_on_one_log_are_not_shown_the_same_candidate_at_once(sortset, tmp_path):
    path = tmp_path / "team2.sqlite"
    ana = SortingApp(sortset, log=path, annotator="ana", seed=0)
    ben = SortingApp(sortset, log=path, annotator="ben", seed=0)  # the same learner: the same ranking
    try:
        for _ in range(6):
            assert ana.shown != ben.shown
            claims = ana.log.claims()
            assert claims.get(ana.shown) == "ana" and claims.get(ben.shown) == "ben"
            ana.label(1 if ana.shown % 2 else 0)
            ben.label(1 if ben.shown % 2 else 0)
    finally:
        ana.close()
        ben.close()


def test_when_everything_is_labelled_no_candidate_is_on_screen(tmp_path):
    small = make_sortset(4, shape=(48, 48), n_frames=120, crop=15, seed=3)
    app = SortingApp(small, log=tmp_path / "all.sqlite", annotator="ana", seed=0)
    try:
        while app.shown is not None:
            app.label(1 if app.shown % 2 else 0)
        assert (app.labels >= 0).all() and "Every candidate is labelled" in app.panel.status
        before = [(d.candidate, d.label) for d in app.log.history()]
        act(app, "label", label=0)  # a stray key
        with pytest.raises(InputError, match="no candidate on screen"):
            app.label(0)
        assert [(d.candidate, d.label) for d in app.log.history()] == before
        act(app, "undo")  # undo still brings the last one back
        assert app.shown == before[-1][0] and app.labels[app.shown] == -1
    finally:
        app.close()


def test_rerunning_the_cell_closes_the_earlier_app_on_that_log(sortset, tmp_path):
    path = tmp_path / "rerun.sqlite"
    first = SortingApp(sortset, log=path, annotator="ana", seed=0)
    first.label(1)
    second = SortingApp(sortset, log=path, annotator="ana", seed=0)
    try:
        with pytest.raises(InputError):
            first.label(1)  # closed: its log refuses, so nothing it is asked can drift from the new panel
        assert second.log.history()[0].candidate == first.history[0]
        other = SortingApp(sortset, log=path, annotator="ben", seed=0)  # another annotator's panel stays open
        other.label(0)
        second.label(1)
        other.close()
    finally:
        second.close()


def test_resuming_restores_this_annotators_threshold_and_strategy(sortset, tmp_path):
    path = tmp_path / "settings.sqlite"
    app = SortingApp(sortset, log=path, annotator="ana", seed=0)
    app.plots.threshold.value = 0.7
    app.plots.strategy.value = "dcal"
    app.label(1)
    app.close()
    again = SortingApp(sortset, log=path, annotator="ana", seed=0)
    try:
        assert again.learner.threshold == pytest.approx(0.7) and again.learner.strategy == "dcal"
        assert again.plots.threshold.value == pytest.approx(0.7) and again.plots.strategy.value == "dcal"
    finally:
        again.close()
    explicit = SortingApp(sortset, log=path, annotator="ana", seed=0, threshold=0.4)  # an argument wins
    ben = other_kernel(sortset, log=path, annotator="ben", seed=0)  # another annotator keeps the defaults
    try:
        assert explicit.learner.threshold == pytest.approx(0.4) and explicit.learner.strategy == "dcal"
        assert ben.learner.threshold == pytest.approx(0.5) and ben.learner.strategy == "explore"
    finally:
        explicit.close()
        ben.close()
    from actsort_nb.store import LabelLog

    log = LabelLog(path, annotator="ana")
    log.save_settings(strategy="gone-in-this-version")
    log.close()
    with pytest.warns(UserWarning, match="saved strategy"):
        SortingApp(sortset, log=path, annotator="ana", seed=0).close()


def test_a_subsets_labels_land_on_their_own_rois(sortset, tmp_path):
    # a sort set of some of a plane's ROIs (ids = the ROI indices): each label goes to its ROI's row
    plane = tmp_path / "plane0"
    plane.mkdir()
    n = sortset.sizes["candidate"]
    original = np.column_stack([np.ones(n), np.full(n, 0.9)])
    np.save(plane / "iscell.npy", original)
    picked = np.arange(3, n, 2)
    sub = sortset.isel(candidate=picked)
    app = SortingApp(sub, log=tmp_path / "sub.sqlite", annotator="ana", seed=0)
    try:
        for _ in range(4):
            app.label(0)
        labelled = picked[app.labels == 0]
        app.export("suite2p", plane)
        iscell = np.load(plane / "iscell.npy")
        np.testing.assert_array_equal(np.flatnonzero(iscell[:, 0] == 0), np.sort(labelled))
        untouched = np.setdiff1d(np.arange(n), picked)
        np.testing.assert_array_equal(iscell[untouched], original[untouched])  # not in the subset: as they were
    finally:
        app.close()
