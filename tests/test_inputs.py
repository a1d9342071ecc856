"""Listing and cutting inputs: lazy, ordered, bounded; only descriptors leave the coordinator."""

from __future__ import annotations

import os
import pickle

import pytest
from conftest import SCRIPTS

from batchinfer import inputs as inputs_module
from batchinfer.entry import check_entry_script
from batchinfer.executors.local import MAX_PREFETCH, LocalExecutor
from batchinfer.inputs import InputPlan, _glob_regex
from batchinfer.job import _worker_config
from batchinfer.output import Journal, RowSink
from batchinfer.resume import prepare_output
from batchinfer.scheduler import Scheduler, TryLog
from batchinfer.spec import load_spec


def spec_for(tmp_path, path: str, **extra):
    lines = ["entry_script: echo_names.py", f"source_directory: {SCRIPTS}", "inputs:", f"  path: {path}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    (tmp_path / "job.yaml").write_text("\n".join(lines) + "\n")
    return load_spec(tmp_path / "job.yaml")


def make_tree(root, folders: int, per_folder: int) -> None:
    for f in range(folders):
        (root / f"d{f:03d}").mkdir(parents=True)
        for i in range(per_folder):
            (root / f"d{f:03d}" / f"x{i:03d}.bin").write_bytes(b"x")


def test_first_mini_batch_exists_before_the_folder_is_fully_listed(tmp_path, monkeypatch):
    make_tree(tmp_path / "data", folders=40, per_folder=5)
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(inputs_module.os, "scandir", lambda p: (listed.append(p), real_scandir(p))[1])
    batches = InputPlan(spec_for(tmp_path, "data", mini_batch_size=3)).mini_batches()
    first = next(batches)
    assert len(first.files) == 3
    assert len(listed) <= 3  # the top folder and the first sub-folder or two, not all 41
    rest = list(batches)
    assert sum(len(b.files) for b in [first, *rest]) == 200
    assert len(listed) == 41


def test_order_is_sorted_depth_first_and_ids_are_stable(tmp_path):
    make_tree(tmp_path / "data", folders=3, per_folder=4)
    spec = spec_for(tmp_path, "data", mini_batch_size=5)
    once = [(b.id, b.files) for b in InputPlan(spec).mini_batches()]
    again = [(b.id, b.files) for b in InputPlan(spec).mini_batches()]
    assert once == again
    files = [f for _, batch in once for f in batch]
    assert files == sorted(files)
    assert [i for i, _ in once] == [0, 1, 2]


def test_descriptors_are_small_and_picklable(tmp_path):
    make_tree(tmp_path / "data", folders=1, per_folder=100)
    batch = next(InputPlan(spec_for(tmp_path, "data", mini_batch_size=100)).mini_batches())
    assert len(pickle.dumps(batch)) < 100 * 120  # paths only, no file contents


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/d/*.png", "/d/a.png", True),
        ("/d/*.png", "/d/sub/a.png", False),
        ("/d/**/*.png", "/d/a.png", True),
        ("/d/**/*.png", "/d/x/y/a.png", True),
        ("/d/img_?.png", "/d/img_1.png", True),
        ("/d/img_[0-4].png", "/d/img_7.png", False),
        ("/d/img_[!0-4].png", "/d/img_7.png", True),
    ],
)
def test_glob_patterns(pattern, path, matches):
    assert bool(_glob_regex(pattern).match(path)) is matches


def test_the_pool_holds_a_bounded_number_of_mini_batches(tmp_path):
    make_tree(tmp_path / "data", folders=1, per_folder=300)
    spec = spec_for(tmp_path, "data", mini_batch_size=1, process_count_per_node=2)
    entry = check_entry_script(spec)
    out = tmp_path / "out"
    prepare_output(out, spec, "test", restart=False)
    journal = Journal(out / ".batchinfer")
    sink = RowSink(out, spec.append_row_file_name, "txt", journal)
    executor = LocalExecutor(_worker_config(spec, entry, out), spec.worker_count, 30)
    pulled = 0
    high_water = 0

    def counted():
        nonlocal pulled
        for batch in InputPlan(spec).mini_batches():
            pulled += 1
            yield batch

    def watch(progress):
        nonlocal high_water
        high_water = max(high_water, pulled - progress.mini_batches_done)

    scheduler = Scheduler(spec, counted(), executor, sink, TryLog(out / "logs"), journal, watch)
    executor.start()
    try:
        progress = scheduler.run()
    finally:
        executor.stop()
    sink.finish()
    assert progress.mini_batches_done == 300
    assert high_water <= spec.worker_count * (1 + MAX_PREFETCH)
    assert len((out / "parallel_run_step.txt").read_text().splitlines()) == 300
