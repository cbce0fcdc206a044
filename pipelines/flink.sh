#!/usr/bin/env bash
# Ingest on a Flink cluster. Usage: pipelines/flink.sh DATASET OUT FLINK_MASTER (host:port)
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=FlinkRunner --flink_master="$3" --environment_type=LOOPBACK
