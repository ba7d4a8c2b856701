"""What a pool is: ``pool/manifest.json`` and its safetensors members (:mod:`.format`, :mod:`.manifest`),
and the generator/discriminator architectures that load them (:mod:`.networks`).

May import: the rest of the foundation (io, errors), torch, safetensors.
"""
