#!/usr/bin/env bash
# Ingest on a Flink cluster through Beam's portable runner. UNTESTED here (needs a Flink cluster,
# Java and the Beam Flink job server jar, which Beam downloads unless given --flink_job_server_jar,
# and Docker on every task manager).
# Usage: pipelines/flink.sh DATASET OUT FLINK_MASTER (host:port) SDK_IMAGE
# SDK_IMAGE: the Beam SDK container with pop_tf built from pipelines/Dockerfile. The Python work runs
# in those containers on the task managers (not in this process, as LOOPBACK would), so DATASET and
# OUT must be reachable from them: gs://, s3://, hdfs://, or a volume mounted at the same path.
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" \
  --runner=FlinkRunner --flink_master="$3" --environment_type=DOCKER --environment_config="$4"
