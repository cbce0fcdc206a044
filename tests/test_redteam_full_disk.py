"""A full (or over-quota, or read-only) disk is one sentence, whichever library the write went
through, and leaves no staging folder behind: Beam jobs (ingest, pairs), export, staging, `pop-tf run`.

The disk is simulated in-process: the function the stage writes with raises the OSError a full
disk raises, and Beam's FnApiRunner (in-process) wraps it as it would a real one.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from pop_tf import cli, errors, pipeline, serving, synth
from pop_tf import config as config_lib
from pop_tf.stages import export, ingest, staging
from tests.conftest import tiny_config

CODES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
PHRASE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "no space left on the device",
          errno.EROFS: "is read-only"}


def _full(code=errno.ENOSPC, path="/somewhere/shard-00000"):
    return OSError(code, os.strerror(code), path)


def _error_lines(err: str) -> list:
    return [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]


def _hidden(folder) -> list:
    """pop_tf's hidden leftovers: staging folders, their lock, export temporaries."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.startswith((staging.PREFIX, ".export-")) or n.endswith(".tmp"))


# ------------------------------------------------------------------ every wrapping, one sentence

def _beam_text(code, path):  # what Beam's RuntimeError says of a worker's OSError
    return f"OSError: [Errno {code}] {os.strerror(code)}: '{path}' [while running 'Writetrain/Write/WriteImpl']"


def _wrapped_variants(code):
    """Every way a full disk reached a CLI in the red team's runs (and a few more)."""
    import tensorflow as tf

    path = "/data/out/.staging-0123456789ab/beam-temp-x/shard"
    plain = _full(code, path)
    chained = RuntimeError(_beam_text(code, path))
    chained.__context__ = plain
    text_only = RuntimeError(_beam_text(code, path))  # the multi-process runner keeps only the text
    traceback_text = RuntimeError("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                                  + "\n".join(f"  frame {i}" for i in range(150)) + "\n"
                                  + _beam_text(code, path))
    tf_error = tf.errors.ResourceExhaustedError(None, None, f"{path}; {os.strerror(code)}")
    tf_cause = ValueError("saving failed")
    tf_cause.__cause__ = tf_error
    copy_list = shutil.Error([(f"/src/f{i}", f"/dst/f{i}", f"[Errno {code}] {os.strerror(code)}: '/dst/f{i}'")
                              for i in range(40)])
    deep = plain
    for depth in range(6):
        outer = RuntimeError(f"layer {depth}")
        outer.__cause__ = deep
        deep = outer
    group = ExceptionGroup("workers", [ValueError("other"), _full(code, path)])
    no_filename = OSError(code, os.strerror(code))
    return {"plain": plain, "beam_chained": chained, "beam_text": text_only, "beam_traceback_text": traceback_text,
            "tensorflow": tf_error, "tensorflow_cause": tf_cause, "shutil_copytree_list": copy_list,
            "deep_chain": deep, "exception_group": group, "no_filename": no_filename}


@pytest.mark.parametrize("code", CODES)
def test_every_wrapping_of_a_full_disk_is_one_sentence_naming_the_folder(code, capsys):
    variants = _wrapped_variants(code)
    for name, error in variants.items():
        assert errors.find_storage_error(error) is not None and errors.reportable(error), name
        assert errors.report("pop-tf ingest", error) == 1, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert err.startswith("pop-tf ingest: error: ") and PHRASE[code] in err, (name, err)
        assert len(err) < 250, (name, len(err))  # not the 1,353-character list of copytree
        if name not in ("no_filename", "shutil_copytree_list"):
            assert "/data/out/.staging-0123456789ab/beam-temp-x" in err, (name, err)
        # inside a stage: the output folder is named, not Beam's temporary file
        with pytest.raises(errors.StorageError) as raised:
            with errors.storage_errors("/data/out"):
                raise error
        assert str(raised.value).startswith(f"{PHRASE[code]} holding /data/out" if code != errno.EROFS
                                            else "the device holding /data/out is read-only"), name


def test_other_errors_are_not_taken_for_a_full_disk():
    others = [RuntimeError("boom"), OSError(errno.EACCES, "Permission denied", "/x"), ValueError("space left"),
              shutil.Error([("/a", "/b", "[Errno 13] Permission denied: '/b'")])]
    for error in others:
        assert errors.find_storage_error(error) is None
        assert errors.reportable(error) == isinstance(error, OSError)
        with pytest.raises(type(error)):
            with errors.storage_errors("/out"):
                raise error


def test_a_copytree_failure_that_is_not_a_full_disk_is_one_short_sentence(capsys):
    error = shutil.Error([(f"/src/f{i}", f"/dst/f{i}", f"[Errno 13] Permission denied: '/dst/f{i}'")
                          for i in range(40)])
    errors.report("pop-tf export", error)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 200 and "and 39 more files" in err


# ------------------------------------------------------------------ staging: any failure, nothing left

FAILURE_POINTS = ("makedirs", "write", "record", "replace-first", "replace-last", "rmtree-old")


def _fail_at(point, monkeypatch, code):
    real_makedirs, real_replace, real_open = os.makedirs, os.replace, open
    replaced = []

    def makedirs(path, *args, **kwargs):
        if os.path.basename(str(path)).startswith(staging.PREFIX):
            raise _full(code, str(path))
        return real_makedirs(path, *args, **kwargs)

    def replace(source, target):
        replaced.append(target)
        last = point == "replace-last" and os.path.basename(str(target)) == "z-last"
        if (point == "replace-first" and len(replaced) == 2) or last:  # after the record went in
            raise _full(code, str(target))
        return real_replace(source, target)

    def record_open(path, mode="r", *args, **kwargs):
        if staging.RECORD in str(path) and "w" in mode:
            raise _full(code, str(path))
        return real_open(path, mode, *args, **kwargs)

    if point == "makedirs":
        monkeypatch.setattr(staging.os, "makedirs", makedirs)
    elif point.startswith("replace"):
        monkeypatch.setattr(staging.os, "replace", replace)
    elif point == "record":
        monkeypatch.setattr("builtins.open", record_open)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("point", FAILURE_POINTS)
def test_a_stage_failing_anywhere_leaves_no_staging_folder_and_says_one_sentence(point, code, tmp_path,
                                                                              monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".staging-0123456789ab").mkdir()  # a killed run's, removed by the next run
    failing = [point == "write"]

    @staging.stage_run
    def stage_run():
        folder = staging.make_staging(str(out))
        for name in ("a-1", "b-2", "z-last"):
            with open(os.path.join(folder, name), "w") as f:
                if failing[0] and name == "b-2":
                    raise _full(code, f.name)
                f.write(name)
        staging.install(folder, str(out), owned_prefixes=("a-", "b-", "z-"), owner="test")
        return "installed"

    _fail_at(point, monkeypatch, code)
    if point == "rmtree-old":  # not a failure: the run goes through
        assert stage_run() == "installed"
        assert _hidden(out) == []
        return
    with pytest.raises(errors.StorageError) as raised:
        stage_run()
    monkeypatch.undo()
    failing[0] = False
    assert str(out) in str(raised.value) and PHRASE[code] in str(raised.value)
    assert errors.report("pop-tf stage", raised.value) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert _hidden(out) == [], point  # no staging folder and no lock
    # and the next run goes through
    assert stage_run() == "installed" and _hidden(out) == []


def test_a_failure_that_names_its_staging_folder_keeps_it_for_inspection(tmp_path):
    out = tmp_path / "out"

    @staging.stage_run
    def accounting_fails():
        folder = staging.make_staging(str(out))
        raise ingest.IngestError(f"accounting check failed; the outputs were left in {folder} for inspection")

    with pytest.raises(ingest.IngestError) as raised:
        accounting_fails()
    kept = [n for n in os.listdir(out) if n.startswith(staging.PREFIX)]
    assert len(kept) == 1 and kept[0] in str(raised.value)
    assert staging.LOCK not in os.listdir(out)  # the lock went all the same


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_an_interrupted_stage_leaves_no_staging_folder(stop, tmp_path):
    out = tmp_path / "out"

    @staging.stage_run
    def interrupted():
        staging.make_staging(str(out))
        raise stop()

    with pytest.raises(stop):
        interrupted()
    assert _hidden(out) == []


# ------------------------------------------------------------------ Beam: ingest and pairs, for real

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("disk") / "dataset"
    synth.run(config_lib.SynthConfig(output=str(root), num_posts=40, image_size=32, seed=5))
    return root


@pytest.fixture(scope="module")
def ingested(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("disk") / "ingest"
    ingest.run(config_lib.IngestConfig(input=str(dataset), output=str(out), image_size=32, test_ratio=0.3))
    return out


def _beam_writers():
    """Places a Beam job writes through (pop_tf's own sinks, Beam's filesystem), each patched to
    fail the way a full disk does."""
    from apache_beam.io import filesystem, localfilesystem

    from pop_tf.beam import sinks

    def raising(code):
        def fail(*args, **kwargs):
            raise _full(code, "/beam/temp/shard")
        return fail

    return {
        "tfrecord_record": (sinks, "write_record"),
        "text_record": (sinks, "write_line"),
        "sink_open": (localfilesystem.LocalFileSystem, "create"),
        "sink_close": (filesystem.CompressedFile, "close"),
        "finalize_rename": (localfilesystem.LocalFileSystem, "rename"),
    }, raising


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("writer", ["tfrecord_record", "text_record", "sink_open", "sink_close", "finalize_rename"])
@pytest.mark.parametrize("stage", ["ingest", "pairs"])
def test_a_beam_job_on_a_full_disk_is_one_sentence_and_leaves_nothing(stage, writer, code, dataset, ingested,
                                                                      tmp_path, monkeypatch, capsys, caplog):
    writers, raising = _beam_writers()
    owner, name = writers[writer]
    monkeypatch.setattr(owner, name, raising(code))
    out = tmp_path / "out"
    source = dataset if stage == "ingest" else ingested
    rc = cli.main([stage, "--input", str(source), "--output", str(out)]
                  + (["--image-size", "32"] if stage == "ingest" else []))
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = _error_lines(err)
    assert lines == [f"pop-tf {stage}: error: " + errors.storage_sentence(code, str(out))], err
    assert "Traceback" not in err
    # Beam's own ERROR log of the worker's exception, with its traceback, is not written either
    assert not [r for r in caplog.records if r.levelno >= 40 and r.name.startswith("apache_beam")]
    assert not os.path.exists(out) or os.listdir(out) == []


def test_a_full_disk_in_a_beam_job_is_one_line_in_a_real_process(dataset, tmp_path):
    """As users see it: the CLI's own logging set-up, nothing captured by pytest."""
    out = tmp_path / "out"
    script = ("import errno, os, sys\n"
              "from pop_tf.beam import sinks\n"
              "def full(*a, **k):\n"
              "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'shard')\n"
              "sinks.write_record = full\n"
              "from pop_tf import cli\n"
              f"sys.exit(cli.main(['ingest', '--input', {str(dataset)!r}, '--output', {str(out)!r}, "
              "'--image-size', '32']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line or "ERROR" in line]
    assert lines == [f"pop-tf ingest: error: no space left on the device holding {out}; free some space or "
                     "point --workdir/--output at another disk, then rerun"], result.stderr
    assert os.listdir(out) == []


def test_a_full_disk_in_pop_tf_run_is_one_sentence_naming_the_stage_folder(tmp_path, monkeypatch, caplog):
    from pop_tf.beam import sinks

    def full(*args, **kwargs):
        raise _full(errno.ENOSPC, "shard")

    monkeypatch.setattr(sinks, "write_record", full)
    workdir = tmp_path / "w"
    config = tiny_config("synth.num_posts=30")
    with pytest.raises(errors.StorageError, match=f"no space left on the device holding {workdir / 'ingest'};"):
        pipeline.run(config, str(workdir), until="pairs")
    assert _hidden(workdir / "ingest") == [] and not (workdir / "ingest" / pipeline.MARKER).exists()
    assert (workdir / "synth" / pipeline.MARKER).exists()
    monkeypatch.undo()
    caplog.clear()
    pipeline.run(config, str(workdir), until="ingest")  # space freed: the rerun goes through
    assert "[ingest] done" in caplog.text


# ------------------------------------------------------------------ export

def _fake_model(folder, files=30):
    """A folder export takes for a ranker SavedModel: a model card with limits, and some files."""
    (folder / "variables").mkdir(parents=True)
    for i in range(files):
        (folder / "variables" / f"part-{i:03d}").write_bytes(os.urandom(64))
    (folder / "assets").mkdir()
    serving._write_limits(str(folder / "assets" / serving.LIMITS_ASSET), {"max_pixels": 4096})
    serving.write_model_card(str(folder), "ranker", {}, "fingerprint", limits={"max_pixels": 4096})


EXPORT_FAILURES = ("copy-first", "copy-middle", "copy-every", "limits", "card", "rename", "mkdtemp", "manifest",
                   "resolved-config")


def _break_export(point, code, monkeypatch):
    calls = []
    real_copyfile = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        calls.append(src)
        if point == "copy-every" or (point == "copy-first" and len(calls) == 1) or \
                (point == "copy-middle" and len(calls) == 10):
            with open(dst, "wb") as f:  # half a file, then the disk is full
                f.write(b"x")
            raise _full(code, dst)
        return real_copyfile(src, dst, *args, **kwargs)

    def fail(*args, **kwargs):
        raise _full(code, str(args[0]) if args else "somewhere")

    if point.startswith("copy"):
        monkeypatch.setattr(shutil, "copyfile", copyfile)
    elif point == "limits":
        monkeypatch.setattr(serving, "_write_limits", fail)
    elif point == "card":
        monkeypatch.setattr(serving, "write_model_card", fail)
    elif point == "rename":
        monkeypatch.setattr(export.os, "rename", fail)
    elif point == "mkdtemp":
        monkeypatch.setattr(export.tempfile, "mkdtemp", fail)
    elif point == "manifest":
        real_open = open

        def manifest_open(path, mode="r", *args, **kwargs):
            if str(path).endswith("exported.json.tmp"):
                raise _full(code, str(path))
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr("builtins.open", manifest_open)
    elif point == "resolved-config":
        monkeypatch.setattr(config_lib, "write_resolved", fail)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("point", EXPORT_FAILURES)
def test_export_on_a_full_disk_is_one_sentence_and_leaves_no_temporary(point, code, tmp_path, monkeypatch,
                                                                      capsys):
    workdir, exported = tmp_path / "w", tmp_path / "serving"
    _fake_model(workdir / "train_ranker" / "saved_model")
    args = ["export", "--workdir", str(workdir), "--export-dir", str(exported), "--set", "export.models=ranker"]
    _break_export(point, code, monkeypatch)
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err)  # "export: ranker → …" progress lines aside
    assert len(lines) == 1 and len(lines[0]) < 300 and "Traceback" not in err, err
    assert all(line.startswith("export: ") for line in err.strip().splitlines() if line not in lines), err
    folder = workdir / "export" if point in ("manifest", "resolved-config") else exported / "ranker"
    assert lines[0] == "pop-tf export: error: " + errors.storage_sentence(code, str(folder)), err
    assert _hidden(exported / "ranker") == [] and _hidden(workdir / "export") == []
    if point not in ("manifest", "resolved-config"):
        assert serving.next_version(str(exported / "ranker")) == 1  # no half version
    monkeypatch.undo()
    assert cli.main(args) == 0
    capsys.readouterr()
    assert json.loads((workdir / "export" / "exported.json").read_text())["ranker"] == str(exported / "ranker" / "1")
