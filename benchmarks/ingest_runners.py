"""Ingest throughput under three Beam runners against a plain single-process loop, as whole
commands (process start, imports, pipeline, accounting check, install).

    python benchmarks/ingest_runners.py prepare /tmp/bench --num-posts 2000 --size 256
    # the plain loop: the per-record work of ingest with no pipeline around it
    /usr/bin/time -v python benchmarks/ingest_runners.py loop /tmp/bench/dataset /tmp/bench/loop --size 256
    # DirectRunner (FnApiRunner), one process
    /usr/bin/time -v pop-tf ingest --input /tmp/bench/dataset --output /tmp/bench/direct --image-size 256
    # DirectRunner with 2 worker processes
    /usr/bin/time -v pop-tf ingest --input /tmp/bench/dataset --output /tmp/bench/multi --image-size 256 \\
        --direct_num_workers=2 --direct_running_mode=multi_processing
    # a dask LocalCluster of 2 worker processes, started first and left running
    python benchmarks/ingest_runners.py cluster --port 8786 --workers 2 &
    /usr/bin/time -v pop-tf ingest --input /tmp/bench/dataset --output /tmp/bench/dask --image-size 256 \\
        --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=tcp://127.0.0.1:8786

images/s = posts in the metadata / wall seconds of the command; the ratio is a runner's images/s
over the loop's, measured in the same session. The figures measured on the project's machine are
in docs/performance.md.
"""

import argparse
import os
import sys
import time


def prepare(folder: str, num_posts: int, size: int) -> None:
    from pop_tf import config as config_lib
    from pop_tf import synth

    synth.run(config_lib.SynthConfig(output=os.path.join(folder, "dataset"), num_posts=num_posts,
                                     image_size=size, seed=0))


def loop(dataset: str, output: str, size: int) -> int:
    """The plain single-process loop the runners are compared with (`pop_tf.bench.plain_loop`)."""
    from pop_tf import bench

    return bench.plain_loop(dataset, output, size)


def cluster(port: int, workers: int) -> None:
    """A dask LocalCluster of `workers` single-threaded worker processes on 127.0.0.1:`port`,
    until interrupted."""
    import distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  scheduler_port=port, dashboard_address=None) as local:
        print(f"dask scheduler at {local.scheduler_address} with {workers} workers", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="write the synthetic dataset to FOLDER/dataset")
    p.add_argument("folder")
    p.add_argument("--num-posts", type=int, default=2000)
    p.add_argument("--size", type=int, default=256)
    p = commands.add_parser("loop", help="the plain single-process loop")
    p.add_argument("dataset")
    p.add_argument("output")
    p.add_argument("--size", type=int, default=256)
    p = commands.add_parser("cluster", help="a dask LocalCluster, until interrupted")
    p.add_argument("--port", type=int, default=8786)
    p.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.folder, args.num_posts, args.size)
    elif args.command == "loop":
        started = time.perf_counter()
        n = loop(args.dataset, args.output, args.size)
        seconds = time.perf_counter() - started
        print(f"loop: {n} records in {seconds:.1f}s ({n / seconds:.1f} records/s)", file=sys.stderr)
    else:
        cluster(args.port, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
