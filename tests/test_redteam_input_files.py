"""Red team, files that never end: FIFOs, devices, sockets and symlinks named like inputs.

Opening a FIFO blocks until a writer comes and /dev/zero never ends, so a regression here hangs
or eats memory instead of failing. Every blocking case therefore runs in a thread with a timeout
(a FIFO left blocking is then released by opening its other end), and the one that could read
without bound (a metadata file linked to /dev/zero) runs in a subprocess with a memory cap.
"""

import collections
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from pop_tf.beam import images, reasons
from pop_tf.errors import PopTfError
from pop_tf.stages import ingest
from tests.test_ingest import GOOD, _accepted, _block_image, _cfg, _rejects

TIMEOUT_S = 20
LIMIT = 1000
# What the generators produced, per test: outcome -> count (read by whoever reports the figures).
TALLY = collections.defaultdict(collections.Counter)


def _release(fifos):
    """Opens each FIFO's write end without blocking, which wakes a reader stuck in open()."""
    for fifo in fifos:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader is waiting on it


def no_hang(fn, fifos=(), timeout=TIMEOUT_S):
    """fn()'s result or exception, failing the test (instead of hanging it) after `timeout`."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _release(fifos)
        thread.join(5)
        pytest.fail(f"still blocked after {timeout} s: a special file was opened or read without bound")
    if "error" in box:
        raise box["error"]
    return box["result"]


def _socket_file(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock  # the caller keeps it open; the file stays a socket either way


class Tree:
    """A dataset root, a folder outside it, and every kind of file both can hold."""

    def __init__(self, base):
        self.root, self.outside = base / "root", base / "out"
        self.root.mkdir()
        self.outside.mkdir()
        self.fifos, self.sockets = [], []

    def make(self, where, name, kind):
        """Creates `name` of `kind` in `where`; returns (path, expected outcome when read)."""
        path = where / name
        if kind == "regular":
            path.write_bytes(b"x" * (LIMIT // 2))
            return path, "ok"
        if kind == "empty":
            path.write_bytes(b"")
            return path, "ok"
        if kind == "at_limit":
            path.write_bytes(b"y" * LIMIT)
            return path, "ok"
        if kind == "over_limit":
            with open(path, "wb") as f:
                f.truncate(10**12)  # sparse: a terabyte that costs nothing, refused by its size
            return path, "too_large"
        if kind == "directory":
            path.mkdir()
            return path, "not_regular"
        if kind == "fifo":
            os.mkfifo(path)
            self.fifos.append(path)
            return path, "not_regular"
        if kind == "socket":
            self.sockets.append(_socket_file(path))
            return path, "not_regular"
        if kind == "missing":
            return path, "missing"
        device = {"dev_zero": "/dev/zero", "dev_urandom": "/dev/urandom", "dev_null": "/dev/null"}[kind]
        return device, "not_regular"

    def close(self):
        for sock in self.sockets:
            sock.close()


KINDS = ("regular", "empty", "at_limit", "over_limit", "directory", "fifo", "socket", "missing", "dev_zero",
         "dev_urandom", "dev_null")
ROUTES = ("direct", "symlink", "symlink_chain", "relative_symlink")


def _route(tree, target, route, name):
    """A path inside the root that reaches `target` by `route`."""
    if route == "direct":
        return target
    link = tree.root / f"{name}.png"
    if route == "symlink":
        os.symlink(target, link)
    elif route == "symlink_chain":
        middle = tree.root / f"{name}-middle"
        os.symlink(target, middle)
        os.symlink(middle, link)
    else:
        os.symlink(os.path.relpath(target, tree.root), link)
    return link


def _attempts(tree):
    """Every (kind, place, route, use of root) combination, with the outcome the rule predicts."""
    for kind in KINDS:
        for place in ("inside", "outside"):
            if kind.startswith("dev_") and place == "inside":
                continue  # a device lives in /dev, outside any dataset root
            for route in ROUTES:
                if route == "direct" and place == "outside":
                    continue
                name = f"{kind}-{place}-{route}"
                target, expected = tree.make(tree.root if place == "inside" else tree.outside, name, kind)
                path = _route(tree, target, route, name)
                for use_root in (True, False):
                    outcome = "outside_root" if use_root and (place == "outside" or kind.startswith("dev_")) else expected
                    yield path, use_root, outcome


def test_only_regular_files_inside_the_root_are_read_and_never_without_bound(tmp_path):
    tree = Tree(tmp_path)
    try:
        count = 0
        for path, use_root, expected in _attempts(tree):
            root = str(tree.root) if use_root else None

            def read(path=path, root=root):
                try:
                    data = images.read_untrusted_file(str(path), LIMIT, root=root, limit_name="test.limit")
                except images.FileRefused as e:
                    return e.kind, e.message
                return "ok", data

            kind, detail = no_hang(read, tree.fifos)
            assert kind == expected, (path, use_root, detail)
            if kind == "ok":
                assert len(detail) <= LIMIT
            else:
                assert kind in images.REFUSED_KINDS and detail
                if kind == "too_large":
                    assert "test.limit" in detail and f"{LIMIT:,}" in detail
            TALLY["read_untrusted_file"][kind] += 1
            count += 1
        assert count > 100
    finally:
        tree.close()


def test_the_refusal_names_what_the_file_is(tmp_path):
    tree = Tree(tmp_path)
    try:
        for kind, words in (("fifo", "is a FIFO (named pipe), not a regular file"), ("socket", "is a socket"),
                            ("directory", "is a directory"), ("dev_zero", "is a character device")):
            path, _ = tree.make(tree.root, kind, kind)
            with pytest.raises(images.FileRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
                no_hang(lambda path=path: images.read_untrusted_file(str(path), LIMIT), tree.fifos)
    finally:
        tree.close()


def test_a_file_that_grows_past_the_limit_while_read_is_cut_off(tmp_path, monkeypatch):
    path = tmp_path / "growing.png"
    path.write_bytes(b"z" * 10)
    real_fstat = os.fstat

    def fstat_then_grow(fd):  # the file was small when checked, then grows before the read
        info = real_fstat(fd)
        with open(path, "ab") as f:
            f.write(b"z" * (3 * LIMIT))
        return info

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    with pytest.raises(images.FileRefused) as info:
        images.read_untrusted_file(str(path), LIMIT)
    assert info.value.kind == "too_large"


# ------------------------------------------------------------------------------------------
# A real ingest job: special files named like images
# ------------------------------------------------------------------------------------------


def test_ingest_rejects_special_image_files_instead_of_blocking(tmp_path):
    tree = Tree(tmp_path)
    (tree.root / "images").mkdir()
    (tree.root / "images" / "good.png").write_bytes(_block_image(1))
    lines, expected = [json.dumps({**GOOD, "post_id": "good", "image": "images/good.png"})], {}
    outcome_reason = {"not_regular": reasons.NOT_AN_IMAGE, "outside_root": reasons.UNSAFE_PATH,
                      "missing": reasons.MISSING_FILE, "too_large": reasons.FILE_TOO_LARGE}
    try:
        for kind in ("fifo", "socket", "directory", "over_limit", "missing", "dev_zero", "dev_urandom", "dev_null"):
            for place in ("inside", "outside"):
                for route in ROUTES:
                    if (route == "direct" and place == "outside") or (kind.startswith("dev_") and place == "inside"):
                        continue
                    name = f"{kind}-{place}-{route}"
                    target, outcome = tree.make(tree.root if place == "inside" else tree.outside, name, kind)
                    path = _route(tree, target, route, name)
                    if place == "outside" or kind.startswith("dev_"):
                        outcome = "outside_root"
                    image = os.path.relpath(path, tree.root)
                    expected[len(lines) + 1] = outcome_reason[outcome]
                    lines.append(json.dumps({**GOOD, "post_id": name, "image": image}))
        (tree.root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        cfg = _cfg(tree.root, tmp_path / "result", max_file_bytes=200_000, dedupe_images=False)
        paths = no_hang(lambda: ingest.run(cfg), tree.fifos, timeout=180)
    finally:
        tree.close()
    got = {r["line"]: r["reason"] for r in _rejects(paths["output"])}
    assert got == expected
    assert [p["post_id"] for p in _accepted(paths["output"])] == ["good"]
    TALLY["ingest images"].update({"record": 1, **collections.Counter(got.values())})


# ------------------------------------------------------------------------------------------
# The metadata file itself (in a subprocess: a regression could read /dev/zero until memory ends)
# ------------------------------------------------------------------------------------------

_METADATA_CASES = r'''
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # an unbounded read fails here, not the machine
from pop_tf import config
from pop_tf.beam import metadata
from pop_tf.errors import PopTfError
from pop_tf.stages import ingest

base, cases = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, limit in cases:
    metadata.MAX_METADATA_BYTES = limit
    cfg = config.IngestConfig(input=os.path.join(base, name), output=os.path.join(base, name + "-result"),
                              image_size=32, dedupe_images=False)
    try:
        ingest.run(cfg)
        results[name] = ["ok", ""]
    except PopTfError as e:
        results[name] = [type(e).__name__, str(e)]
    print(json.dumps({name: results[name]}), flush=True)
'''


def _metadata_cases(base):
    """Dataset folders whose metadata file is hostile: (name, size limit, expected words)."""
    good = json.dumps({**GOOD, "post_id": "m", "image": "images/good.png"}) + "\n"
    outside = base / "outside.jsonl"
    outside.write_text(good)
    fifo_outside = base / "outside.fifo"
    os.mkfifo(fifo_outside)
    cases, fifos = [], [fifo_outside]

    def dataset(name, make, expected, limit=1 << 30, file_name="metadata.jsonl"):
        root = base / name
        (root / "images").mkdir(parents=True)
        (root / "images" / "good.png").write_bytes(_block_image(2))
        make(root / file_name)
        cases.append((name, limit, expected))

    def fifo(path):
        os.mkfifo(path)
        fifos.append(path)

    def fifo_via_link(path):
        fifo(path.parent / "real.fifo")
        os.symlink("real.fifo", path)

    def sparse(path):
        with open(path, "wb") as f:
            f.truncate((1 << 30) + 1)

    for device in ("/dev/zero", "/dev/urandom", "/dev/null", "/dev/full"):
        dataset(f"link-{device[5:]}", lambda p, d=device: os.symlink(d, p), "resolves outside the dataset root")
    dataset("fifo", fifo, "is a FIFO (named pipe), not a regular file")
    dataset("fifo-csv", fifo, "is a FIFO", file_name="metadata.csv")
    dataset("fifo-link-inside", fifo_via_link, "is a FIFO")
    dataset("fifo-link-outside", lambda p: os.symlink(fifo_outside, p), "resolves outside the dataset root")
    dataset("file-link-outside", lambda p: os.symlink(outside, p), "resolves outside the dataset root")
    dataset("directory", lambda p: p.mkdir(), "is a directory")
    dataset("socket", lambda p: _socket_file(p).close(), "is a socket")
    dataset("sparse-1gib", sparse, "above the limit of 1,073,741,824 bytes (MAX_METADATA_BYTES")
    dataset("over-small-limit", lambda p: p.write_text(good * 20), "above the limit of 1,000 bytes", limit=1000)
    dataset("regular-link-inside", lambda p: ((p.parent / "real.jsonl").write_text(good),
                                              os.symlink("real.jsonl", p)), None)
    return cases, fifos


def test_ingest_refuses_a_metadata_file_that_is_not_a_regular_file_inside_the_root(tmp_path):
    cases, fifos = _metadata_cases(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", _METADATA_CASES, str(tmp_path), json.dumps([(n, limit) for n, limit, _ in cases])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        _release(fifos)
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"ingest blocked on a metadata file; finished: {stdout}")
    results = {}
    for line in stdout.splitlines():
        results.update(json.loads(line))
    assert process.returncode == 0 and len(results) == len(cases), stderr[-3000:]
    for name, _, expected in cases:
        kind, message = results[name]
        if expected is None:
            assert kind == "ok", (name, message)
        else:
            assert kind == "IngestError" and expected in message and "metadata" in message, (name, message)
            assert not os.path.exists(tmp_path / f"{name}-result"), name  # refused before writing anything
        TALLY["ingest metadata files"]["ok" if expected is None else "refused"] += 1


# ------------------------------------------------------------------------------------------
# pop-tf translate's --a/--b
# ------------------------------------------------------------------------------------------


def test_translate_reads_only_regular_image_files(tmp_path):
    from pop_tf import translate

    tree = Tree(tmp_path)
    try:
        for kind in ("fifo", "socket", "directory", "missing", "dev_zero", "dev_urandom", "dev_null"):
            for route in ("direct", "symlink"):
                target, _ = tree.make(tree.root, f"{kind}-{route}", kind)
                path = target if route == "direct" else _route(tree, target, "symlink", f"{kind}-{route}")

                def read(path=path):
                    try:
                        translate.read_image(str(path), "--a", 10**6)
                    except PopTfError as e:
                        return str(e)
                    return None

                message = no_hang(read, tree.fifos)
                assert message and message.startswith(f"--a {path} ") and (
                    "not a regular file" in message or "does not exist" in message), message
                TALLY["translate images"]["refused"] += 1
    finally:
        tree.close()
