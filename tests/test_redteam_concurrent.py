"""Two runs into one output folder: the second stops at once with a sentence naming the folder and
the process that holds it, and never deletes the first one's staging folder.

Every stage that writes an output folder takes the lock in `staging.make_staging` (the same fcntl
lock `pop-tf run` holds on its work folder); `install`, or the end of the run however it ends,
releases it, and the OS releases it when a process dies.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from pop_tf import config as config_lib
from pop_tf import pipeline, synth
from pop_tf.stages import ingest, pairs, staging
from tests.conftest import tiny_config

HOLDER = """
import sys, time
from pop_tf.stages import staging
folder = staging.make_staging(sys.argv[1])
print(folder, flush=True)
time.sleep(600)
"""


def _busy_message(output, pid) -> str:
    return (f"output folder {output} is being written by another pop_tf process (pid {pid}); wait for it to "
            "finish or choose another output folder")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent") / "dataset"
    synth.run(config_lib.SynthConfig(output=str(root), num_posts=30, image_size=32, seed=7))
    return root


@pytest.fixture(scope="module")
def ingested(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("concurrent") / "ingest"
    ingest.run(config_lib.IngestConfig(input=str(dataset), output=str(out), image_size=32, test_ratio=0.3))
    return out


def _holder(output):
    """Another process holding `output` as a stage does while it writes; (process, its staging folder)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdout=subprocess.PIPE, text=True)
    folder = process.stdout.readline().strip()
    assert folder.startswith(str(output)), "the holder did not start"
    return process, folder


@pytest.mark.parametrize("stage", ["ingest", "pairs"])
def test_a_second_stage_cli_into_a_held_output_fails_at_once_naming_the_holder(stage, dataset, ingested, tmp_path):
    out = tmp_path / "out"
    mine = staging.make_staging(str(out))  # this process is writing `out`
    source = dataset if stage == "ingest" else ingested
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pop_tf", stage, "--input", str(source), "--output", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"pop-tf {stage}: error: {_busy_message(out, os.getpid())}"
    assert os.path.isdir(mine)  # the first run's staging folder is still there
    assert not [n for n in os.listdir(out) if n.startswith(staging.PREFIX) and n not in (os.path.basename(mine),
                                                                                        staging.LOCK)]
    assert time.monotonic() - started < 120  # at once: before any Beam work
    staging.install(mine, str(out), owned_names=(), owner=stage)  # the first run ends
    assert sorted(os.listdir(out)) == [staging.RECORD]  # lock and staging folder gone


@pytest.mark.parametrize("stage", ["ingest", "pairs", "run"])
def test_a_stage_into_an_output_another_process_holds_is_refused_then_runs_once_it_died(stage, dataset, ingested,
                                                                                        tmp_path):
    workdir = tmp_path / "w"
    out = workdir / "ingest" if stage == "run" else tmp_path / "out"
    holder, theirs = _holder(out)
    try:
        def attempt():
            if stage == "ingest":
                return ingest.run(config_lib.IngestConfig(input=str(dataset), output=str(out), image_size=32))
            if stage == "pairs":
                return pairs.run(config_lib.PairsConfig(input=str(ingested), output=str(out)))
            return pipeline.run(tiny_config("ingest.image_size=32"), str(workdir), dataset=str(dataset),
                                until="ingest")

        with pytest.raises(staging.OutputBusyError) as refused:
            attempt()
        assert str(refused.value) == _busy_message(out, holder.pid)
        assert os.path.isdir(theirs)  # their staging folder was not touched
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing anything itself
        holder.wait()
    attempt()  # the OS released the lock: this run goes, and removes the killed run's staging folder
    assert not os.path.exists(theirs)
    assert not [n for n in os.listdir(out) if n.startswith(staging.PREFIX)]


ROUNDS, RACERS = 6, 3
RACER = """
import os, sys, time
from pop_tf.stages import staging
start = sys.argv[2]
while not os.path.exists(start):
    time.sleep(0.005)
try:
    folder = staging.make_staging(sys.argv[1])
except staging.OutputBusyError as e:
    print("busy", e, flush=True)
else:
    time.sleep(1.5)  # writing
    print("won", folder, os.path.isdir(folder), flush=True)
"""


def test_racing_processes_into_one_output_let_exactly_one_write(tmp_path):
    """Generated variants: rounds of processes started together against one output folder."""
    outcomes = []
    for round_ in range(ROUNDS):
        out, start = tmp_path / f"out{round_}", tmp_path / f"start{round_}"
        racers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(start)], stdout=subprocess.PIPE,
                                   text=True) for _ in range(RACERS)]
        time.sleep(0.5)
        start.touch()
        results = [racer.communicate(timeout=60)[0].strip() for racer in racers]
        winners = [r for r in results if r.startswith("won")]
        losers = [r for r in results if r.startswith("busy")]
        assert len(winners) == 1 and len(losers) == RACERS - 1, results
        assert winners[0].endswith("True")  # nobody deleted the winner's staging folder while it wrote
        winner_pid = [racer.pid for racer, r in zip(racers, results) if r.startswith("won")][0]
        assert all(f"output folder {out} is being written by another pop_tf process (pid {winner_pid})" in r
                   for r in losers), results
        outcomes.append((len(winners), len(losers)))
    assert outcomes == [(1, RACERS - 1)] * ROUNDS


def test_a_lock_released_between_anothers_open_and_lock_is_not_taken_twice(tmp_path, monkeypatch):
    """The holder unlinks the lock file when it releases; a process that opened the old file just
    before must not take a lock on that unlinked file while a third holds the new one."""
    path = str(tmp_path / "lockfile")
    first = staging.acquire_lock(path, RuntimeError)
    third = []
    real_flock = staging.fcntl.flock

    def flock(fd, operation):
        if not third:  # between the second's open and its lock: the first releases, a third takes it
            staging.release_lock(first, path)
            monkeypatch.setattr(staging.fcntl, "flock", real_flock)
            third.append(staging.acquire_lock(path, RuntimeError))
        return real_flock(fd, operation)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    with pytest.raises(staging.OutputBusyError):
        staging.acquire_lock(path, lambda holder: staging.OutputBusyError(holder))
    staging.release_lock(third[0], path)
    assert not os.path.exists(path)
    again = staging.acquire_lock(path, RuntimeError)  # free again
    staging.release_lock(again, path)


def test_the_same_process_may_stage_an_output_again(tmp_path):
    """A rerun in the same process (a notebook, a test) after a failure is not refused by itself."""
    out = tmp_path / "out"
    first = staging.make_staging(str(out))
    second = staging.make_staging(str(out))  # the first was left by a failure; it is cleaned up
    assert not os.path.exists(first) and os.path.isdir(second)
    staging.install(second, str(out), owner="x")
    assert sorted(os.listdir(out)) == [staging.RECORD]
