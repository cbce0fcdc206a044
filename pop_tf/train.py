"""`python -m pop_tf.train ranker|clusterer|translator --workdir W [--preset P] [--set k=v]`.

The training entry point of the trainer stages (docs/architecture.md). Each trainer is a stage
module under `pop_tf.stages` whose `main(argv)` resolves its config section (`run_trainer`) and
trains.
"""

import argparse
import importlib
import json
import sys

TRAINERS = {
    "ranker": "pop_tf.stages.train_ranker",
    "clusterer": "pop_tf.stages.cluster",
    "translator": "pop_tf.stages.train_translator",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pop_tf.train",
                                     description="Train one of pop_tf's models.")
    parser.add_argument("model", choices=sorted(TRAINERS), help="which model to train")
    parser.add_argument("--workdir", required=True, help="pipeline work folder (reads earlier stages' outputs)")
    parser.add_argument("--preset", help="demo, paper, or a JSON file of overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv=None) -> int:
    from pop_tf.cli import configure_logging
    configure_logging()
    args = build_parser().parse_args(argv)
    module = importlib.import_module(TRAINERS[args.model])
    return module.main(sys.argv[1:] if argv is None else argv)


def run_trainer(argv, model: str, section: str, run) -> int:
    """The shared CLI of the training stages: resolve the section's config, run it, report errors.

    Paths default to their places in `--workdir` (`pop_tf.contracts.paths` of the stage): they
    replace a preset's paths, and `--set` overrides them like any other key.
    """
    from pop_tf import config as config_lib
    from pop_tf import contracts
    from pop_tf.errors import report, reportable
    from pop_tf.paths import check_stage

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == model:
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args([model, *argv])
    try:
        config = config_lib.resolve(args.preset, args.sets, default_section=section,
                                    overrides={section: contracts.paths(section, args.workdir)})
        section_config = getattr(config, section)
        if args.dry_run:
            print(json.dumps(config_lib.to_dict(section_config), indent=2, sort_keys=True))
            return 0
        check_stage(section, section_config)
        paths = run(section_config)
    except Exception as e:  # a full disk may come wrapped by TensorFlow or Beam
        if not reportable(e):
            raise
        return report(f"python -m pop_tf.train {model}", e)
    print(json.dumps(paths, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
