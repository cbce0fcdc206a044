#!/usr/bin/env bash
# Ingest on a dask.distributed cluster. Usage: pipelines/dask.sh DATASET OUT SCHEDULER (tcp://host:8786)
# pop_tf's source (Create → FlatMap → Reshuffle) avoids ReadFromText, which fails on Dask, and the
# job counts the records it wrote from the files, so Dask's empty-final-shard bug fails loudly.
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address="$3"
