#!/usr/bin/env bash
# The main job, end to end: train a 2x2 grid -> optimize an ensemble for class diversity (TVD)
# -> export it to one ONNX graph -> sample from the ONNX model. `make serve` then serves it.
# Re-running continues where it stopped (the training resumes from its last checkpoint).
set -euo pipefail
RUN=${1:-runs/quickstart}
BIN=${BIN:-.venv/bin}
# Extra arguments per step (empty by default; tests/test_docs.py uses them for a small, fast run), e.g.
#   TRAIN_ARGS="coevolution.generations=2 threads=1" bash scripts/quickstart.sh runs/tiny
TRAIN_ARGS=${TRAIN_ARGS:-} OPTIMIZE_ARGS=${OPTIMIZE_ARGS:-} EVALUATE_ARGS=${EVALUATE_ARGS:-} EXPORT_ARGS=${EXPORT_ARGS:-}

echo "== 1/4 train a 2x2 grid of GANs (Mustangs) on Fashion-MNIST -> $RUN/pool"
$BIN/trainer train configs/quickstart.yaml --out "$RUN" --resume $TRAIN_ARGS

echo "== 2/4 re-purpose the pool: CMA-ES over mixture weights for class diversity (tvd)"
$BIN/ensembler optimize "$RUN/pool" --objective tvd --method cma --budget 2000 --seed 0 \
    --out "$RUN/ensemble.json" --plot "$RUN/ensemble-curve.png" --report $OPTIMIZE_ARGS
$BIN/ensembler evaluate "$RUN/ensemble.json" -n 5000 $EVALUATE_ARGS

echo "== 3/4 export the ensemble to one ONNX graph (parity-checked against torch)"
$BIN/serving export "$RUN/ensemble.json" --out "$RUN/ensemble.onnx" $EXPORT_ARGS

echo "== 4/4 sample 64 images from the ONNX model"
$BIN/serving sample "$RUN/ensemble.onnx" -n 64 --seed 1 --out "$RUN/samples.png"

cat <<MSG

Done. Look at:
  $RUN/report.html         the training report (fid_cls heatmaps, curves, samples) and the ensemble:
                           every candidate's fid and tvd beside real-image and noise references
  $RUN/ensemble.json       chosen generators, weights, estimated and verified metrics
  $RUN/samples.png         64 samples from the exported ONNX ensemble
Serve it over HTTP:  make serve RUN=$RUN    (then: curl -s -X POST 127.0.0.1:3000/sample \\
  -H 'content-type: application/json' -d '{"n":16,"seed":1}' -o samples.png)
MSG
