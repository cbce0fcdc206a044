"""`pop-tf`: thin command-line entry points. Each parses flags, resolves a config, calls `run()`.

Every command takes `--preset demo|paper|FILE.json`, `--set section.key=value` (repeatable; a
key without a section belongs to the command's own stage) and `--dry-run` (print the resolved
config and exit). Errors the user can fix are one sentence on stderr and a non-zero exit code.
"""

import argparse
import importlib
import json
import logging
import os
import sys

from pop_tf import __version__
from pop_tf import config as config_lib
from pop_tf.errors import UsageError, report, reportable

EXIT_USAGE = UsageError.exit_code


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="demo, paper, or a JSON file of overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. ingest.image_size=128 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _flag_overrides(section: str, args, names) -> dict:
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {section: values} if values else {}


def _print_config(section_obj) -> None:
    print(json.dumps(config_lib.to_dict(section_obj), indent=2, sort_keys=True))


def cmd_synth(args, extra) -> int:
    from pop_tf import synth
    _no_extra(extra)
    cfg = config_lib.resolve(args.preset, args.sets, "synth",
                             _flag_overrides("synth", args, ("output", "num_posts", "image_size", "seed"))).synth
    if args.dry_run:
        _print_config(cfg)
        return 0
    if not cfg.output:
        raise UsageError("synth needs --output DIR")
    paths = synth.run(cfg)
    print(json.dumps(paths, indent=2))
    return 0


def _stage(stage: str, flags, beam: bool = True):
    """A command for a stage module `pop_tf.stages.<stage>`; for Beam stages unknown flags go to Beam.

    A `--workdir` (the training stages') fills every path from the stage's contract first, as
    `python -m pop_tf.train` does; the command's own flags and `--set` then override them.
    """

    def command(args, beam_args) -> int:
        if not beam:
            _no_extra(beam_args)
        overrides = _flag_overrides(stage, args, flags)
        if getattr(args, "workdir", None):
            from pop_tf import contracts
            overrides = {stage: {**contracts.paths(stage, args.workdir), **overrides.get(stage, {})}}
        cfg = getattr(config_lib.resolve(args.preset, args.sets, stage, overrides), stage)
        if args.dry_run:
            _print_config(cfg)
            return 0
        if stage in _TRAINERS:
            from pop_tf.paths import check_stage
            check_stage(stage, cfg)
        module = importlib.import_module(f"pop_tf.stages.{stage}")
        paths = module.run(cfg, beam_args) if beam else module.run(cfg)
        print(json.dumps({k: v for k, v in paths.items() if k not in ("train", "test")}, indent=2))
        return 0

    return command


cmd_ingest = _stage("ingest", ("input", "output", "image_size"))
cmd_pairs = _stage("pairs", ("input", "output"))
cmd_score = _stage("score", ("input", "model", "output"), beam=False)
cmd_cluster = _stage("cluster", ("input", "output"), beam=False)
cmd_export = _stage("export", ("workdir", "export_dir"), beam=False)
_TRAINERS = {
    "train_ranker": "train the siamese popularity ranker on the pairs (also: python -m pop_tf.train ranker)",
    "train_translator": "train the translator, DMIT or cluster-conditioned pix2pix "
                        "(also: python -m pop_tf.train translator)",
}


def cmd_run(args, extra) -> int:
    from pop_tf import pipeline
    _no_extra(extra)
    overrides = {"export": {"export_dir": args.export_dir}} if args.export_dir else None
    config = config_lib.resolve(args.preset, args.sets, overrides=overrides)
    if args.dry_run:
        print(json.dumps(config_lib.to_dict(config), indent=2, sort_keys=True))
        return 0
    pipeline.run(config, workdir=args.workdir, dataset=args.dataset, until=args.until, from_stage=args.from_stage)
    return 0


def cmd_bench(args, extra) -> int:
    from pop_tf import bench
    return bench.main(extra)


def cmd_evaluate(args, extra) -> int:
    from pop_tf.stages import evaluate
    return evaluate.main(extra)


def cmd_ablate(args, extra) -> int:
    from pop_tf import ablation
    return ablation.main(extra)


def cmd_translate(args, extra) -> int:
    from pop_tf import translate
    return translate.main(extra)


def _no_extra(extra) -> None:
    if extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")


_BEAM_EPILOG = ("Any other --flag is a Beam pipeline option, e.g. --runner=DataflowRunner "
                "or --direct_num_workers=2 --direct_running_mode=multi_processing.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pop-tf", description="Popularity-driven, diverse garment image generation (TensorFlow).")
    parser.add_argument("--version", action="version", version=f"pop_tf {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                          help="show warnings and errors only (before COMMAND)")
    loudness.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                          help="show debug messages, and TensorFlow's and Beam's INFO (before COMMAND)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="write the embedded synthetic dataset")
    p.add_argument("--output", help="dataset folder to write")
    p.add_argument("--num-posts", type=int, dest="num_posts")
    p.add_argument("--image-size", type=int, dest="image_size")
    p.add_argument("--seed", type=int)
    _common(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="Beam job: posts → validated TFRecords, rejects.jsonl, stats.json",
                       epilog=_BEAM_EPILOG)
    p.add_argument("--input", help="dataset folder with metadata.jsonl or metadata.csv")
    p.add_argument("--output", help="output folder")
    p.add_argument("--image-size", type=int, dest="image_size")
    _common(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("pairs", help="Beam job: ingested posts → popularity-discriminable image pairs, stats.json",
                       epilog=_BEAM_EPILOG)
    p.add_argument("--input", help="an ingest output folder (train-*/test-*.tfrecord.gz)")
    p.add_argument("--output", help="output folder")
    _common(p)
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("score", help="score every ingested image with the ranker; domain labels for the translator")
    p.add_argument("--input", help="an ingest output folder (train-*/test-*.tfrecord.gz)")
    p.add_argument("--model", help="a ranker SavedModel folder (e.g. WORKDIR/train_ranker/saved_model)")
    p.add_argument("--output", help="output folder")
    _common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("cluster", help="EfficientNet-B0 features, k-means, cluster statistics, clusterer SavedModel")
    p.add_argument("--input", help="an ingest output folder (train-*/test-*.tfrecord.gz)")
    p.add_argument("--output", help="output folder")
    _common(p)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("export", help="copy trained SavedModels into EXPORT_DIR/<model>/<version>/")
    p.add_argument("--workdir", help="the pipeline work folder holding the trained models")
    p.add_argument("--export-dir", dest="export_dir", help="serving folder (default ./saved_models)")
    _common(p)
    p.set_defaults(func=cmd_export)

    for stage, help_text in _TRAINERS.items():
        p = sub.add_parser(stage, help=help_text)
        p.add_argument("--workdir", help="pipeline work folder: every input and output path at its place there")
        p.add_argument("--output", help="output folder (overrides the work folder's)")
        _common(p)
        p.set_defaults(func=_stage(stage, ("output",), beam=False))

    p = sub.add_parser("bench", help="measured speed figures (see `pop-tf bench --help`)", add_help=False)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("evaluate", help="popularity uplift, FID, LPIPS diversity, NDB/JSD and report.html "
                       "(see `pop-tf evaluate --help`)", add_help=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ablate", help="train pix2pix per diversity method (none, ms, clusters) and evaluate them "
                       "together: the papers' ablation tables (see `pop-tf ablate --help`)", add_help=False)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("translate", help="style/content/random-style translations of two images as the 10-image grid",
                       add_help=False)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("run", help="run the pipeline's stages in order")
    p.add_argument("--workdir", required=True, help="folder for every stage's outputs")
    p.add_argument("--dataset", help="an existing dataset (default: synthesise one)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--from", dest="from_stage", metavar="STAGE",
                   help="rerun this stage and every later one from scratch (their outputs are replaced)")
    p.add_argument("--export-dir", dest="export_dir", help="where SavedModels go (default ./saved_models)")
    _common(p)
    p.set_defaults(func=cmd_run)
    return parser


def configure_logging(verbosity: int = 0) -> None:
    """What the command lines show: pop_tf's progress at INFO, -1 warnings only, 1 debug too.

    Library code only logs (the `pop_tf` logger tree); this is the one place that decides where
    it goes, and it steps aside when the host (a notebook, pytest, an app) has configured
    logging already.
    """
    # TensorFlow's C++ start-up lines (CUDA probing on a CPU machine, oneDNN notes) are not
    # for users of a command line; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if logging.getLogger().handlers:
        return
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO if verbosity > 0 else logging.WARNING))


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    configure_logging(args.verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args, extra)
    except Exception as e:  # a full disk may come wrapped by TensorFlow or Beam
        if not reportable(e):
            raise
        return report(f"pop-tf {args.command}", e)


if __name__ == "__main__":
    sys.exit(main())
