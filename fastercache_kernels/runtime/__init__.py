"""The hook engine (engine.py) and the policies that plug into it: FasterCache attention reuse and CFG-Cache
(fastercache.py, cfg.py) and the adaptive block policies AdaCache, TeaCache and First-Block-Cache (adaptive.py,
blocks.py). Importing it imports no model package."""
