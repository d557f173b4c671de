"""Interactive panels (ipywidgets): every panel has a pure ``render()`` for headless runs and tests.

``CorruptionPanel`` (notebook 01), ``LatentExplorer`` (04), ``SamplerPanel`` (05-07) and
``OrderViewer`` (08-09); ``base.Panel`` is what they share.
"""
