#!/usr/bin/env bash
# Ingest on Google Cloud Dataflow. Usage: pipelines/dataflow.sh gs://bucket/dataset OUT PROJECT REGION
# Workers install pop_tf from this checkout (--setup_file); the output folder stays local.
set -euo pipefail
pop-tf ingest --input "$1" --output "$2" --preset paper \
  --runner=DataflowRunner --project="$3" --region="$4" \
  --temp_location="$1/_beam_tmp" --setup_file="$(dirname "$0")/../setup.py"
