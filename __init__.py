"""comcloak: cloak photos so image classifiers mislabel them, even after recompression (ComReAdv, MobiHoc 2020).

Subpackages, in data-flow order: ``codecs`` -> ``models`` -> ``attacks`` -> ``export`` -> ``engine``.
The public API is :class:`comcloak.engine.Cloaker`; import it from there (kept lazy so that
``import comcloak.codecs`` does not load torch).
"""

__version__ = "0.1.0"
