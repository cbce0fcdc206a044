#!/usr/bin/env bash
# Ingest on a Spark cluster through Beam's portable runner. UNTESTED here (needs a Spark cluster,
# Java and the Beam Spark job server jar, which Beam downloads unless given --spark_job_server_jar,
# and Docker on every executor).
# Usage: pipelines/spark.sh DATASET OUT SPARK_MASTER_URL SDK_IMAGE
# SDK_IMAGE: the Beam SDK container with pop_tf built from pipelines/Dockerfile. The Python work runs
# in those containers on the executors (not in this process, as LOOPBACK would), so DATASET and OUT
# must be reachable from them: gs://, s3://, hdfs://, or a volume mounted at the same path.
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=SparkRunner --spark_master_url="$3" --environment_type=DOCKER --environment_config="$4"
