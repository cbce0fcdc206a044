"""`pop-tf ablate`: the papers' ablation tables from our own runs.

Trains Suzuki et al.'s edge map → colour generator once per diversity method (`ablation.variants`,
default none / ms / clusters: pix2pix-like, MSGAN, the paper's cluster method) on the same data,
networks, seed and schedule — everything but the method comes from the `train_translator`
section, with `model=pix2pix` — each into `<output>/pix2pix_<variant>/`, then runs the evaluate
stage over all of them (and over the work folder's DMIT translator, when there is one). The
evaluation's `report.html` and `metrics.json` hold the paper-2 Table 1 layout (FID, NDB, JSD,
LPIPS per variant) and, for the translator, the paper-1 Table 2 layout (LPIPS/FID for edge →
colour and colour → colour).

A rerun resumes each variant from its newest checkpoint (a finished one only re-exports its
samples), so an interrupted ablation is finished by running the same command again. TensorBoard
shows the variants as runs `pix2pix_<variant>` side by side, with their options in the HParams tab.
"""

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys

from pop_tf import config as config_lib
from pop_tf import contracts
from pop_tf.errors import report, reportable
from pop_tf.paths import check_stage

log = logging.getLogger(__name__)

STAGE = "ablation"


def variant_folder(output: str, variant: str) -> str:
    return os.path.join(output, f"pix2pix_{variant}")


def run(cfg: config_lib.AblationConfig, translator: config_lib.TranslatorConfig,
        evaluation: config_lib.EvaluateConfig) -> dict:
    """Trains every variant, then evaluates them together; returns the artifact paths.

    Args:
        cfg: the variants and the output folder.
        translator: the training settings shared by every variant (its `model`, `diversity` and
            `output` are set per variant; `input` and `clusters` must be filled).
        evaluation: the evaluate settings (`input`, `ranker`, ... filled); its `pix2pix_variants`
            and `output` are set here.
    """
    if not cfg.output:
        raise config_lib.ConfigError("ablation needs 'ablation.output' (or --workdir)")
    if not cfg.variants:
        raise config_lib.ConfigError("config key 'ablation.variants' is empty; name some of none, ms, clusters")
    from pop_tf.stages import evaluate, train_translator

    variants = {}
    for variant in cfg.variants:
        settings = copy.deepcopy(translator)
        settings.model, settings.diversity = "pix2pix", variant
        settings.output = variant_folder(cfg.output, variant)
        # Beside the pipeline's own runs (<workdir>/logs), so one TensorBoard shows them all.
        logs = translator.logdir or os.path.join(os.path.dirname(os.path.abspath(cfg.output)), "logs")
        settings.logdir = os.path.join(logs, f"pix2pix_{variant}")
        variants[variant] = settings
    evaluation = dataclasses.replace(evaluation, pix2pix_variants=[variant_folder(cfg.output, v) for v in cfg.variants],
                                     output=os.path.join(cfg.output, "evaluate"))
    # Every variant's and the evaluation's paths, before the first variant trains.
    for settings in variants.values():
        check_stage("train_translator", settings)
    check_stage("evaluate", evaluation)

    paths = {"variants": {}}
    for variant, settings in variants.items():
        log.info(f"{STAGE}: training pix2pix with diversity={variant} → {settings.output}")
        paths["variants"][variant] = train_translator.run(settings)["metrics"]
    paths.update(evaluate.run(evaluation))
    return paths


def main(argv=None) -> int:
    """`pop-tf ablate --workdir W [--preset P] [--set key=value ...] [--dry-run]`."""
    parser = argparse.ArgumentParser(prog="pop-tf ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True,
                        help="a pipeline work folder with score, cluster and train_ranker outputs; results go "
                             "to WORKDIR/ablation")
    parser.add_argument("--preset", help="demo, paper, or a JSON file of overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. ablation.variants=none,clusters or "
                             "train_translator.epochs=2 (a key without a section belongs to ablation; repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    try:
        # What train_translator and evaluate read in the work folder; `run` sets their outputs and
        # the evaluated pix2pix folders (the variants) itself.
        overrides = {STAGE: contracts.paths(STAGE, workdir)}
        for stage in contracts.BY_NAME[STAGE].combines:
            overrides[stage] = {k: v for k, v in contracts.inputs(stage, workdir).items() if k != "pix2pix_variants"}
        config = config_lib.resolve(args.preset, args.sets, default_section=STAGE, overrides=overrides)
        if args.dry_run:
            print(json.dumps({name: config_lib.to_dict(getattr(config, name))
                              for name in (STAGE, "train_translator", "evaluate")}, indent=2, sort_keys=True))
            return 0
        paths = run(config.ablation, config.train_translator, config.evaluate)
    except Exception as e:  # a full disk may come wrapped by TensorFlow or Beam
        if not reportable(e):
            raise
        return report("pop-tf ablate", e)
    print(json.dumps(paths, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from pop_tf.cli import configure_logging
    configure_logging()
    sys.exit(main())
