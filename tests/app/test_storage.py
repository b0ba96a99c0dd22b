"""The index's on-disk format (heatsearch.app.storage): what may be replaced, the atomic save
under SIGKILL at every step, leftovers of dead writers (never of live ones, never another
index's), indexes of heatsearch 0.1/0.2 (format version 1)."""

from __future__ import annotations

import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from heatsearch.app import _writers, storage
from heatsearch.app.index import Index
from heatsearch.errors import IndexFileError, InvalidInputError

from helpers import small_index, tree, write_version1

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HEATSEARCH_NUM_THREADS="1")
#: The functions a save's steps go through (each changes the disk once), in storage.py.
STEPS = ("_make_dir", "_write_json", "_write_npy", "_write_npy_blocks", "_replace", "_fsync_dir", "_remove_tree",
         "_unlink")


def version_dirs(folder):
    return sorted(p.name for p in Path(folder).iterdir() if _writers.parse(p.name))


def current_dir(folder):
    return Path(folder) / json.loads((Path(folder) / "index.json").read_text())["data"]


def rows(stored, column):
    """A column of a StoredIndex read: its array (versions 1, 2) or its shards' live rows (3)."""
    if stored.store is None:
        return stored.descriptors if column == "desc" else stored.pooled
    return stored.store.materialise(column)


def same(stored, index):
    """Whether the StoredIndex read is exactly ``index`` (every array)."""
    if stored.paths != [os.path.relpath(p, index.root) for p in index.paths]:
        return False
    w1, w2 = stored.whitening, index.whitening
    return (
        np.array_equal(rows(stored, "desc"), index.descriptors)
        and np.array_equal(rows(stored, "pooled"), index.pooled)
        and np.array_equal(stored.mean, index.mean)
        and (w1 is None) == (w2 is None)
        and (w1 is None or np.array_equal(w1.projection_, w2.projection_))
    )


# ---------------------------------------------------------------------------------------------
# 1. What may be replaced.
# ---------------------------------------------------------------------------------------------
def test_the_reported_site_folder_is_refused_before_extraction(tmp_path, monkeypatch):
    """`mkdir site; echo '{}' > site/index.json; echo x > site/app.js; heatsearch index photos
    -o site` exited 0 and deleted app.js."""
    from heatsearch.app.cli import main

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.json").write_text("{}\n")
    (site / "app.js").write_text("x\n")
    (tmp_path / "photos").mkdir()

    def extraction(*args, **kwargs):
        raise AssertionError("extraction started before the target was checked")

    monkeypatch.setattr(Index, "build", extraction)
    assert main(["index", str(tmp_path / "photos"), "-o", str(site), "--quiet"]) == 2
    assert tree(site) == {"index.json": b"{}\n", "app.js": b"x\n"}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "index.json").write_text("{}"), "not a heatsearch index.*format None"),
        (lambda d: (d / "index.json").write_text("{broken"), "not a heatsearch index.*corrupt JSON"),
        (lambda d: (d / "index.json").write_text('{"format": "other-tool", "version": 1}'), "other-tool"),
        (lambda d: (d / "index.json").write_text('{"format": "heatsearch-index", "version": 7}'), "version 7"),
        (lambda d: (d / "index.json").write_text('{"format": "heatsearch-index", "version": 1.0}'), "version 1.0"),
        (lambda d: (d / "thesis.tex").write_text("years of work"), "not a heatsearch index.*thesis.tex"),
        (lambda d: (d / "descriptors.npy").write_text("mine"), "not a heatsearch index.*descriptors.npy"),
        (lambda d: (d / "data-1-2-3").mkdir(), "data-1-2-3"),  # not a version directory's name
        (lambda d: (d / "data-99999999-1-00000000-00000000-00000000").write_text("a file"), "data-9"),
    ],
)
def test_a_folder_that_is_not_an_index_is_refused(tmp_path, make, message):
    target = tmp_path / "out"
    target.mkdir()
    make(target)
    before = tree(target)
    with pytest.raises(IndexFileError, match=message) as e:
        storage.check_target(target)
    assert str(target) in str(e.value)
    with pytest.raises(IndexFileError, match=message):
        small_index(tmp_path).save(target)  # save checks again
    assert tree(target) == before


def test_an_index_with_foreign_files_is_refused(tmp_path):
    target = tmp_path / "idx"
    small_index(tmp_path).save(target)
    (target / "app.js").write_text("x")
    before = tree(target)
    with pytest.raises(IndexFileError, match="not part of a heatsearch index: 'app.js'"):
        storage.check_target(target)
    with pytest.raises(IndexFileError, match="app.js"):
        small_index(tmp_path, seed=1).save(target)
    assert tree(target) == before
    # The same for a version-1 index.
    old = tmp_path / "old"
    write_version1(old, small_index(tmp_path))
    (old / "notes.txt").write_text("mine")
    with pytest.raises(IndexFileError, match="notes.txt"):
        storage.check_target(old)


def test_what_may_be_replaced(tmp_path):
    storage.check_target(tmp_path / "new")  # absent
    storage.check_target(tmp_path / "a" / "b" / "new")  # absent, parents created by save
    (tmp_path / "empty").mkdir()
    storage.check_target(tmp_path / "empty")
    small_index(tmp_path).save(tmp_path / "v2")
    storage.check_target(tmp_path / "v2")
    write_version1(tmp_path / "v1", small_index(tmp_path))
    storage.check_target(tmp_path / "v1")
    # What an interrupted first save left: only a version directory.
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / _writers.new_name()).mkdir()
    storage.check_target(tmp_path / "first")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFileError, match="not a directory"):
        storage.check_target(tmp_path / "file")
    with pytest.raises(IndexFileError, match="'.*file' is not a directory"):
        storage.check_target(tmp_path / "file" / "idx")


# ---------------------------------------------------------------------------------------------
# 2. The atomic save: SIGKILL between any two steps.
# ---------------------------------------------------------------------------------------------
#: A fork server: forks one child per change a save makes to the disk and SIGKILLs the k-th
#: child just before its k-th change (mkdir, a file opened for writing, fsync, replace, unlink,
#: rmdir, ...: every OS-level call that changes the disk, counted black-box). Forking from one
#: process that has imported everything costs milliseconds per case; the server itself runs
#: no heatsearch kernel (so no thread) before forking.
_KILL_SERVER = r"""
import builtins, json, os, pickle, shutil, signal, sys, traceback
from heatsearch.app.index import Index

template, spec, out = sys.argv[1:4]
with open(spec, "rb") as f:
    fields = pickle.load(f)
with open("/proc/self/status") as f:
    threads = [line for line in f if line.startswith("Threads:")]
assert not threads or threads[0].split()[1] == "1", threads  # fork only a single thread

def save_killed_at(target, kill_at):
    steps = [0]
    def step(function, changes=lambda *a, **k: True):
        def run(*args, **kwargs):
            if changes(*args, **kwargs):
                steps[0] += 1
                if steps[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return run
    builtins.open = step(builtins.open, lambda f, mode="r", *a, **k: any(c in mode for c in "wxa+"))
    os.open = step(os.open, lambda p, flags, *a, **k: bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
    for name in ("mkdir", "replace", "rename", "fsync", "unlink", "remove", "rmdir", "link"):
        setattr(os, name, step(getattr(os, name)))
    if "__add__" in fields:  # an incremental save: load, add rows, save (links kept shards)
        index = Index.load(target)
        index.add_descriptors(*fields["__add__"])
        index.save(target)
    else:
        Index(**fields).save(target)
    return steps[0]

def forked(name, kill_at):
    target = os.path.join(out, name)
    shutil.copytree(template, target)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, str(save_killed_at(target, kill_at)).encode())
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    count = os.read(read, 100)
    os.close(read)
    return status, count

status, count = forked("complete", 0)
assert status == 0, status
total = int(count)
killed = []
for k in range(1, total + 1):
    status, _ = forked(f"kill{k:02d}", k)
    killed.append(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
status, _ = forked("again", total // 2)
print(json.dumps({"total": total, "killed": killed}))
"""


def _fields(index):
    keys = ("config", "whitening", "paths", "descriptors", "pooled", "mean", "whitening_learned", "root",
            "mean_images", "whitening_images")
    return {k: getattr(index, k) for k in keys}


def _kill_saves(template, new, out):
    """Saves ``new`` over copies of ``template`` (``out/killNN``), killed before each change to
    the disk; returns how many changes a complete save makes. ``new``: an Index, or
    ``{"__add__": (rows, names)}`` (load the template, add those rows, save)."""
    out.mkdir()
    spec = out.parent / "new.pickle"
    spec.write_bytes(pickle.dumps(new if isinstance(new, dict) else _fields(new)))
    proc = subprocess.run([sys.executable, "-c", _KILL_SERVER, str(template), str(spec), str(out)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert all(report["killed"]), report
    return report["total"]


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/status").exists(), reason="needs fork and /proc")
@pytest.mark.parametrize("old_version", [2, 1])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_index(tmp_path, old_version):
    root = tmp_path / "photos"
    root.mkdir()
    old = small_index(root, n=9, whitening_dim=6)
    new = small_index(root, n=12, seed=5, whitening_dim=7)
    template = tmp_path / "template"
    if old_version == 2:
        old.save(template)
    else:
        write_version1(template, old, paths=[os.path.relpath(p, root) for p in old.paths])
    out = tmp_path / "out"
    total = _kill_saves(template, new, out)
    assert total >= 20  # every file created, written, synced; the switch; the removals
    outcomes = []
    for k in range(1, total + 1):
        target = out / f"kill{k:02d}"
        stored = storage.read_index(target, mmap=False)  # also removes the killed save's leftovers
        outcome = "new" if same(stored, new) else "old" if same(stored, old) else "neither"
        outcomes.append(outcome)
        names = sorted(os.listdir(target))
        if outcome == "new" or old_version == 2:
            assert names == sorted(["index.json", current_dir(target).name]), (k, names)
        else:
            assert names == ["descriptors.npy", "index.json", "mean.npy", "pooled.npy", "whitening.npz"], (k, names)
    assert sorted(os.listdir(out)) == sorted(["complete", "again"] + [f"kill{k:02d}" for k in range(1, total + 1)])
    # One switch: the complete old index up to it, the complete new one from it on.
    switch = outcomes.index("new") if "new" in outcomes else total
    assert outcomes == ["old"] * switch + ["new"] * (total - switch), outcomes
    assert 0 < switch < total
    # The next save (no load in between) removes the killed save's leftovers too.
    again = out / "again"
    assert len(version_dirs(again)) == (2 if old_version == 2 else 1)
    third = small_index(root, n=5, seed=9)
    third.save(again)
    assert sorted(os.listdir(again)) == sorted(["index.json", current_dir(again).name])
    assert same(storage.read_index(again), third)


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/status").exists(), reason="needs fork and /proc")
def test_an_incremental_save_killed_at_any_step_leaves_the_old_or_the_new_index(tmp_path):
    """Format version 3: adding rows to a saved index writes a new shard and hard-links the
    kept one; killed before any step, the index is the old one or the new one, complete."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    Y = rng.standard_normal((5, 6)).astype(np.float32)
    template = tmp_path / "template"
    old = Index.from_descriptors(X)
    old.save(template)
    old.remove(["3"])  # a tombstone in the kept shard
    old.save(template)
    new = Index.load(template)
    new.add_descriptors(Y, [f"y{i}" for i in range(5)])
    expected = {"old": np.asarray(Index.load(template).descriptors), "new": np.asarray(new.descriptors)}
    out = tmp_path / "out"
    total = _kill_saves(template, {"__add__": (Y, [f"y{i}" for i in range(5)])}, out)
    outcomes = []
    for k in range(1, total + 1):
        target = out / f"kill{k:02d}"
        stored = storage.read_index(target, mmap=False)
        rows = stored.store.materialise("desc")
        outcome = next((name for name, e in expected.items() if rows.shape == e.shape and np.array_equal(rows, e)), "neither")
        outcomes.append(outcome)
        assert sorted(os.listdir(target)) == sorted(["index.json", current_dir(target).name]), (k, outcome)
    switch = outcomes.index("new") if "new" in outcomes else total
    assert outcomes == ["old"] * switch + ["new"] * (total - switch), outcomes
    assert 0 < switch < total
    # The complete save kept the first shard (with its tombstone) and added one of the new rows.
    m = json.loads((current_dir(out / "complete") / "meta.json").read_text())
    assert [s["rows"] for s in m["shards"]] == [40, 5] and m["shards"][0]["removed"] == [3]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit, OSError])
def test_an_interrupted_save_cleans_up_after_itself(tmp_path, monkeypatch, interruption):
    """Exceptions (Ctrl-C, sys.exit, a full disk) at any step before the switch: the old
    index stays byte for byte and the new version's directory is removed at once."""
    target = tmp_path / "idx"
    small_index(tmp_path).save(target)
    before = tree(target)
    new = small_index(tmp_path, seed=3, whitening_dim=8)
    # Which call of each step function to interrupt: the shard's paths file (after writer.json),
    # the shard's pooled rows (after its descriptors), the new version's fsync, the switch itself.
    for name, at in (("_make_dir", 1), ("_write_json", 2), ("_write_npy_blocks", 2), ("_fsync_dir", 1), ("_replace", 1)):
        real = getattr(storage, name)
        calls = []

        def interrupted(*args, _real=real, _calls=calls, _at=at, **kwargs):
            _calls.append(1)
            if len(_calls) == _at:
                raise interruption("interrupted (simulated)")
            return _real(*args, **kwargs)

        monkeypatch.setattr(storage, name, interrupted)
        with pytest.raises(interruption):
            new.save(target)
        monkeypatch.undo()
        assert tree(target) == before, name
        assert len(os.listdir(target)) == 2, name


def test_saving_over_a_version1_index_converts_it(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    old = small_index(root, n=6, whitening_dim=5)
    write_version1(tmp_path / "idx", old)
    loaded = Index.load(tmp_path / "idx")
    assert loaded.paths == old.paths
    np.testing.assert_array_equal(loaded.descriptors, old.descriptors)
    loaded.save(tmp_path / "idx")
    names = sorted(os.listdir(tmp_path / "idx"))
    assert names == sorted(["index.json", current_dir(tmp_path / "idx").name])
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["version"] == storage.INDEX_VERSION
    again = Index.load(tmp_path / "idx")
    # Version 1 recorded no root: the conversion records the deepest folder of the images.
    assert again.paths == old.paths and again.root == str(root / "sub")
    np.testing.assert_array_equal(again.pooled, old.pooled)


# ---------------------------------------------------------------------------------------------
# 3. Leftovers: of dead writers only.
# ---------------------------------------------------------------------------------------------
def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60)
    return int(proc.stdout)


def _leftover(folder, pid, *, host=None, start=1):
    me = _writers.me()
    name = f"data-{pid}-{start}-{me.boot}-{host or me.host}-0badc0de"
    (Path(folder) / name).mkdir()
    (Path(folder) / name / "descriptors.npy").write_bytes(b"\0" * 1000)
    return name


def test_leftovers_of_dead_writers_are_removed_and_only_those(tmp_path):
    target, other = tmp_path / "idx", tmp_path / "other"
    small_index(tmp_path).save(target)
    small_index(tmp_path).save(other)
    dead = _dead_pid()
    gone = [_leftover(target, dead), _leftover(target, dead, start=2)]
    foreign_host = _leftover(target, dead, host="ffffffff")  # another machine's writer: unknowable
    live = _leftover(target, os.getppid(), start=_writers._start_time(os.getppid()))  # a running process
    of_other_index = _leftover(other, dead)
    (tmp_path / ".idx.tmp-abcd1234").mkdir()  # heatsearch 0.2's leftover beside the index
    with pytest.warns(UserWarning, match="heatsearch 0.1/0.2 left 1 folder.*'.idx.tmp-abcd1234'.*does not delete"):
        Index.load(target)
    names = set(os.listdir(target))
    assert not names & set(gone)
    assert {foreign_host, live} <= names
    assert of_other_index in os.listdir(other)
    assert (tmp_path / ".idx.tmp-abcd1234").is_dir()
    # A save removes them too (before writing, so their space is free for it).
    again = _leftover(target, dead)
    with pytest.warns(UserWarning, match="heatsearch 0.1/0.2 left 1 folder"):
        small_index(tmp_path, seed=2).save(target)
    assert again not in os.listdir(target)
    assert {foreign_host, live} <= set(os.listdir(target))


def test_a_live_concurrent_writer_is_not_disturbed(tmp_path):
    """A save in another process, paused just before its switch: loads and saves of the same
    index meanwhile leave its version alone; it then completes and wins."""
    target = tmp_path / "idx"
    root = tmp_path / "photos"
    root.mkdir()
    small_index(root, n=4).save(target)
    theirs = small_index(root, n=7, seed=4)
    spec = tmp_path / "theirs.pickle"
    spec.write_bytes(pickle.dumps(_fields(theirs)))
    script = r"""
import pickle, sys
from heatsearch.app import storage
from heatsearch.app.index import Index
real = storage._replace
def paused(*args):
    print("paused", flush=True)
    sys.stdin.readline()
    real(*args)
storage._replace = paused
with open(sys.argv[2], "rb") as f:
    Index(**pickle.load(f)).save(sys.argv[1])
print("saved", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script, str(target), str(spec)], env=ENV, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "paused", proc.stderr.read() if not ready else ""
        staging = [n for n in version_dirs(target) if _writers.parse(n).pid == proc.pid]
        assert len(staging) == 1
        before = tree(target / staging[0])
        assert "meta.json" in before and "index.json.new" in before
        assert len(Index.load(target)) == 4  # reads the old one, collects leftovers
        ours = small_index(root, n=5, seed=6)
        ours.save(target)  # a concurrent save: collects leftovers, switches, removes the old
        assert len(Index.load(target)) == 5
        assert tree(target / staging[0]) == before
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "saved" in out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert same(storage.read_index(target), theirs)  # the last switch wins
    # Our superseded version (ours, no save of ours writing it) was collected by that load.
    assert sorted(os.listdir(target)) == sorted(["index.json", staging[0]])


def test_a_version1_save_killed_between_its_renames_is_recovered(tmp_path):
    """heatsearch 0.2 moved the index aside to .NAME.old-XXXXXXXX, then renamed the new one
    in: killed in between, nothing was at NAME. Load puts the old one back."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    old, new = small_index(root, n=6), small_index(root, n=8, seed=1)
    write_version1(tmp_path / ".idx.old-ab12cd34", old)
    write_version1(tmp_path / ".idx.tmp-ef56gh78", new)
    with pytest.warns(UserWarning) as caught:
        loaded = Index.load(tmp_path / "idx")
    messages = " | ".join(str(w.message) for w in caught)
    assert "moved the index aside to" in messages and "back in place" in messages
    assert "left 1 folder(s)" in messages and ".idx.tmp-ef56gh78" in messages
    assert loaded.paths == old.paths
    assert (tmp_path / ".idx.tmp-ef56gh78").is_dir()  # not deleted: reported
    # Two candidates: which one is the user's cannot be told.
    write_version1(tmp_path / ".two.old-ab12cd34", old)
    write_version1(tmp_path / ".two.old-zz12cd34", new)
    with pytest.raises(IndexFileError, match="left 2 complete indexes beside it .*rename the one to keep to 'two'"):
        Index.load(tmp_path / "two")


def test_writers_are_told_apart(tmp_path):
    me = _writers.me()
    assert me.running() and me.pid == os.getpid()
    assert _writers.parse(_writers.new_name()) == me
    assert _writers.new_name() != _writers.new_name()
    assert _writers.parse("data-1-2-3") is None and _writers.parse("index.json") is None
    dead = _dead_pid()
    assert not _writers.Writer(dead, me.start, me.boot, me.host).running()
    # A reused pid: the process has another start time.
    assert not _writers.Writer(os.getpid(), me.start + 1, me.boot, me.host).running() or me.start == 0
    # Another boot of this host: every writer of then is gone.
    other_boot = "ffffffff" if me.boot != "ffffffff" else "eeeeeeee"
    if me.boot != "00000000":
        assert not _writers.Writer(os.getpid(), me.start, other_boot, me.host).running()
    # Another host: cannot be known, so it counts as running.
    assert _writers.Writer(dead, 1, me.boot, "ffffffff" if me.host != "ffffffff" else "eeeeeeee").running()


# ---------------------------------------------------------------------------------------------
# Whatever is saved loads: an inconsistent index is refused before anything is written.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda ix: setattr(ix, "mean", None), "centering mean"),
        (lambda ix: setattr(ix, "descriptors", np.asarray(ix.descriptors, np.float64)), "descriptors.npy: must be float32"),
        (lambda ix: ix.descriptors.__setitem__((1, 2), np.nan), "NaN at row 1, column 2"),
        (lambda ix: setattr(ix, "pooled", ix.pooled[::-1].copy()), "pooled descriptors do not give"),
        (lambda ix: setattr(ix, "mean", ix.mean[:3]), "mean.npy: must have shape"),
        (lambda ix: setattr(ix, "paths", ix.paths[:-1]), "descriptors.npy: must have shape"),
    ],
)
def test_an_inconsistent_index_is_not_saved(tmp_path, spoil, message):
    index = small_index(tmp_path)
    spoil(index)
    with pytest.raises(InvalidInputError, match=message):
        index.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists() or not os.listdir(tmp_path / "idx")
