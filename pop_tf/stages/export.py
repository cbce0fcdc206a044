"""The `export` stage (TFX Pusher): trained SavedModels into versioned serving folders.

Each training stage already writes its SavedModel (`<workdir>/train_ranker/saved_model`,
`<workdir>/cluster/saved_model`, `<workdir>/train_translator/saved_model`), tested there with the
endpoints of SPEC §7. Export copies each into `<export_dir>/<model>/<v>/`, `<v>` the next integer
version as TF Serving expects. A model whose `pop_tf.json` equals that of the newest version
(same kind, config and training-data fingerprint) is not copied again, so rerunning the pipeline
does not pile up identical versions. The copy goes to a hidden temporary folder first and is
renamed into place, so TF Serving never sees half a version.
"""

import json
import os
import shutil
import sys
import tempfile

from pop_tf import config as config_lib
from pop_tf import serving
from pop_tf.errors import PopTfError

STAGE = "export"
# model name → (stage folder in the workdir, kind written in pop_tf.json)
SOURCES = {"ranker": ("train_ranker", "ranker"), "clusterer": ("cluster", "clusterer"),
           "translator": ("train_translator", "translator")}


class ExportError(PopTfError):
    """A model to export is missing or is not the kind of model its name says."""


def _same_model(card_a: dict, card_b: dict) -> bool:
    keys = ("kind", "config", "data_fingerprint")
    return all(card_a.get(k) == card_b.get(k) for k in keys)


def export_model(source: str, base: str, kind: str) -> tuple:
    """Copies the SavedModel `source` to `base/<next version>`; returns (path, copied?)."""
    card = serving.read_model_card(source, expected_kind=kind)
    version = serving.next_version(base)
    if version > 1:
        newest = os.path.join(base, str(version - 1))
        try:
            if _same_model(serving.read_model_card(newest), card):
                return newest, False
        except PopTfError:
            pass  # a newest version without a readable card is not ours to compare: add a new one
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=base)
    try:
        shutil.copytree(source, os.path.join(staging, "model"))
        target = os.path.join(base, str(version))
        os.rename(os.path.join(staging, "model"), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True


def run(cfg: config_lib.ExportConfig) -> dict:
    """Exports every model in `cfg.models`; returns {model: version folder, "manifest": path}."""
    if not cfg.workdir:
        raise config_lib.ConfigError("export needs 'export.workdir' (the pipeline work folder)")
    export_dir = os.path.abspath(cfg.export_dir)
    paths = {}
    for model in cfg.models:
        if model not in SOURCES:
            raise config_lib.ConfigError(f"config key 'export.models': unknown model {model!r}; "
                                         f"use some of {', '.join(SOURCES)}")
        stage, kind = SOURCES[model]
        source = os.path.join(cfg.workdir, stage, "saved_model")
        if not os.path.isdir(source):
            raise ExportError(f"no {model} SavedModel at {source}; run the {stage} stage first "
                              f"or leave {model} out of export.models")
        target, copied = export_model(source, os.path.join(export_dir, model), kind)
        print(f"export: {model} → {target}" + ("" if copied else " (unchanged, kept)"), file=sys.stderr)
        paths[model] = target
    output = os.path.join(cfg.workdir, STAGE)
    os.makedirs(output, exist_ok=True)
    config_lib.write_resolved(cfg, output)
    manifest = os.path.join(output, "exported.json")
    with open(manifest + ".tmp", "w") as f:
        json.dump(paths, f, indent=2, sort_keys=True)
    os.replace(manifest + ".tmp", manifest)
    return {**paths, "manifest": manifest}
