"""How samples are judged: evaluation classifiers and their store, features, FID/TVD/IS and mode
metrics (:mod:`.metrics`), precision/recall/density/coverage and KID (:mod:`.manifold`), Inception,
and the evaluation of generators and sample sets (:mod:`.evaluation`).

May import: the pool, data, io and console parts of the foundation; torch, numpy, pytorch-fid.
"""
