#!/usr/bin/env bash
# Ingest with 2 worker processes on this machine. Usage: pipelines/local_multiprocess.sh DATASET OUT
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --direct_num_workers=2 --direct_running_mode=multi_processing
