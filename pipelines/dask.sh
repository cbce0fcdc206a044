#!/usr/bin/env bash
# Ingest on a dask.distributed cluster. Usage: pipelines/dask.sh DATASET OUT SCHEDULER (tcp://host:8786)
# Needs `pip install -e ".[dask]"` here and pop_tf importable on every dask worker. Tested by
# tests/test_dask.py (a LocalCluster of 2 worker processes). pop_tf cuts its source into parts and
# sets --dask_npartitions to match (Beam's DaskRunner would otherwise run the job as one task), and
# writes through its own sinks (Beam's TFRecord sink loses the last shard's records on Dask).
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address="$3"
