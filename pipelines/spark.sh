#!/usr/bin/env bash
# Ingest on a Spark cluster. Usage: pipelines/spark.sh DATASET OUT SPARK_MASTER_URL
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=SparkRunner --spark_master_url="$3" --environment_type=LOOPBACK
