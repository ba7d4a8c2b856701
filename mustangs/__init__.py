"""Mustangs' foundation: what a pool is, how samples are judged, the datasets, and the small services
every tool shares. It imports no tool (trainer, ensembler, serving); they all import it.

- :mod:`mustangs.pool`    the pool format (manifest, safetensors members) and the networks that load it
- :mod:`mustangs.judge`   evaluation classifiers and their store, FID/TVD/IS, manifold metrics, KID, Inception
- :mod:`mustangs.data`    datasets and their class names
- :mod:`mustangs.io`      atomic writes, bounded loaders, schema building blocks, path and memory guards, images
- :mod:`mustangs.console` CLI formatting, ranged argument types, progress bars
- :mod:`mustangs.errors`, :mod:`mustangs.names`, :mod:`mustangs.threads`, :mod:`mustangs.report`
"""

__version__ = "0.1.0"
