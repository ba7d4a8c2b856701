"""Files and guards: atomic writes, bounded loaders, pydantic building blocks for file formats, path and
memory guards, fault injection for tests, and image grids.

May import: mustangs.errors; numpy, pillow, pydantic.
"""
