"""The `export` stage (TFX Pusher): trained SavedModels into versioned serving folders.

Each training stage already writes its SavedModel (`<workdir>/train_ranker/saved_model`,
`<workdir>/cluster/saved_model`, `<workdir>/train_translator/saved_model`), tested there with the
endpoints of docs/savedmodels.md. Export copies each into `<export_dir>/<model>/<v>/`, `<v>` the next integer
version as TF Serving expects. A model whose `pop_tf.json` equals that of the newest version
(same kind, config and training-data fingerprint) is not copied again, so rerunning the pipeline
does not pile up identical versions. The copy goes to a hidden temporary folder first and is
renamed into place, so TF Serving never sees half a version; a copy that fails (a full disk: one
sentence naming the folder) leaves no temporary folder behind. Each copy gets the serving limits of
`ExportConfig` (`max_pixels`, `max_samples`) in its `assets/limits.tsv` and `pop_tf.json`, so a
model exported with other limits is a new version.
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile

from pop_tf import config as config_lib
from pop_tf import contracts, errors, serving
from pop_tf.errors import PopTfError
from pop_tf.paths import check_apart

log = logging.getLogger(__name__)

STAGE = "export"
# model name → (stage folder in the workdir, kind written in pop_tf.json)
SOURCES = {"ranker": ("train_ranker", "ranker"), "clusterer": ("cluster", "clusterer"),
           "translator": ("train_translator", "translator")}


class ExportError(PopTfError):
    """A model to export is missing or is not the kind of model its name says."""


def _same_model(card_a: dict, card_b: dict) -> bool:
    keys = ("kind", "config", "data_fingerprint", "limits")
    return all(card_a.get(k) == card_b.get(k) for k in keys)


def export_model(source: str, base: str, kind: str, limits: dict) -> tuple:
    """Copies the SavedModel `source` to `base/<next version>` with the serving `limits` (those of
    them the model has); returns (path, copied?)."""
    card = serving.read_model_card(source, expected_kind=kind)
    if "limits" not in card:
        raise ExportError(f"{source} was exported by an older pop_tf without serving limits; run its training "
                          "stage again with the same settings (it resumes from its last checkpoint and re-exports "
                          "the model), then export")
    wanted = serving.model_limits(card, limits)
    version = serving.next_version(base)
    if version > 1:
        newest = os.path.join(base, str(version - 1))
        try:
            if _same_model(serving.read_model_card(newest), {**card, "limits": wanted}):
                return newest, False
        except PopTfError:
            pass  # a newest version without a readable card is not ours to compare: add a new one
    staging = None
    try:
        with errors.storage_errors(base):
            os.makedirs(base, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".export-", dir=base)
            shutil.copytree(source, os.path.join(staging, "model"))
            serving.set_limits(os.path.join(staging, "model"), wanted)
            target = os.path.join(base, str(version))
            os.rename(os.path.join(staging, "model"), target)
    except shutil.Error as e:  # copytree's list of every file that failed: one sentence of the first
        raise ExportError(f"cannot export {source} to {base}: {errors.describe_os_error(e)}") from None
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


def check_paths(cfg: config_lib.ExportConfig) -> None:
    """Refuses an export folder that overlaps the work folder's stage folders (which hold the
    models it copies, and which `pop-tf run --from` replaces whole) or holds the work folder."""
    from pop_tf.paths import overlap

    # Inside the work folder (beside its stages) is fine; the work folder inside it is not.
    if overlap(cfg.export_dir, cfg.workdir) in ("same", "input inside"):
        check_apart({"export.export_dir": cfg.export_dir}, {"export.workdir": cfg.workdir})
    stage_folders = {f"export.workdir's {stage} folder": contracts.folder(cfg.workdir, stage)
                     for stage in contracts.STAGE_ORDER}
    check_apart({"export.export_dir": cfg.export_dir}, stage_folders)


def run(cfg: config_lib.ExportConfig) -> dict:
    """Exports every model in `cfg.models`; returns {model: version folder, "manifest": path}."""
    if not cfg.workdir:
        raise config_lib.ConfigError("export needs 'export.workdir' (the pipeline work folder)")
    for key in ("max_pixels", "max_samples"):  # an ExportConfig built in code skipped config.resolve
        config_lib.validate_value(f"export.{key}", getattr(cfg, key))
    check_paths(cfg)
    export_dir = os.path.abspath(cfg.export_dir)
    limits = {"max_pixels": cfg.max_pixels, "max_samples": cfg.max_samples}
    paths = {}
    for model in cfg.models:
        if model not in SOURCES:
            raise config_lib.ConfigError(f"config key 'export.models': unknown model {model!r}; "
                                         f"use some of {', '.join(SOURCES)}")
        stage, kind = SOURCES[model]
        source = os.path.join(contracts.folder(cfg.workdir, stage), "saved_model")
        if not os.path.isdir(source):
            raise ExportError(f"no {model} SavedModel at {source}; run the {stage} stage first "
                              f"or leave {model} out of export.models")
        target, copied = export_model(source, os.path.join(export_dir, model), kind, limits)
        log.info(f"export: {model} → {target}" + ("" if copied else " (unchanged, kept)"))
        paths[model] = target
    output = contracts.folder(cfg.workdir, STAGE)
    manifest = os.path.join(output, "exported.json")
    try:
        with errors.storage_errors(output):
            os.makedirs(output, exist_ok=True)
            config_lib.write_resolved(cfg, output)
            with open(manifest + ".tmp", "w") as f:
                json.dump(paths, f, indent=2, sort_keys=True)
            os.replace(manifest + ".tmp", manifest)
    finally:
        with contextlib.suppress(OSError):
            os.remove(manifest + ".tmp")  # only there when the manifest could not be written
    return {**paths, "manifest": manifest}
