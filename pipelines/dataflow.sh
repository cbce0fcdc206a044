#!/usr/bin/env bash
# Ingest on Google Cloud Dataflow. UNTESTED here (needs a GCP project, a bucket, network and
# `pip install "apache-beam[gcp]"` on the launching machine).
# Usage: pipelines/dataflow.sh gs://bucket/dataset gs://bucket/out PROJECT REGION
# Input, output, the staging folder and the final move all go through Beam's FileSystems, so the
# workers write into gs://…/out/.staging-*/ and the launching machine checks and moves them there.
# Workers install pop_tf from this checkout (--setup_file); or build pipelines/Dockerfile, push it
# and replace --setup_file with --sdk_container_image=IMAGE.
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" --preset paper \
  --runner=DataflowRunner --project="$3" --region="$4" \
  --temp_location="${2%/}-beam-temp" --setup_file="$(dirname "$0")/../setup.py"
