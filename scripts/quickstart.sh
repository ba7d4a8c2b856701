#!/usr/bin/env bash
# The main job, end to end. Extended as each part of the pipeline lands.
set -euo pipefail
RUN=${1:-runs/quickstart}
BIN=.venv/bin
$BIN/trainer classifier eval --dataset fashion-mnist
$BIN/trainer score --real fashion-mnist:test --fake fashion-mnist:train --samples 10000
