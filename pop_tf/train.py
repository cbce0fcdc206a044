"""`python -m pop_tf.train ranker|clusterer|translator --workdir W [--preset P] [--set k=v]`.

The training entry point of SPEC §4. Each trainer is a stage module under `pop_tf.stages`; a
trainer that has not landed yet says so and exits with status 2 instead of pretending to train.
"""

import argparse
import sys

TRAINERS = {
    # name: (stage module, the issue that builds it)
    "ranker": ("pop_tf.stages.train_ranker", "#4 popularity module"),
    "clusterer": ("pop_tf.stages.cluster", "#5 diversity by data classification"),
    "translator": ("pop_tf.stages.train_translator", "#6 translation module"),
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
    args = build_parser().parse_args(argv)
    module, issue = TRAINERS[args.model]
    try:
        __import__(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        print(f"python -m pop_tf.train {args.model}: the {args.model} trainer is not built yet "
              f"(tracked in issue {issue}); nothing was trained or written.", file=sys.stderr)
        return 2
    return sys.modules[module].main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
