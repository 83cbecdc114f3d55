"""End-to-end applications: the demo, the cross-validation runner and the baseline.

``medmonai.apps.clinical`` and ``medmonai.apps.pacs`` are compatibility aliases of :mod:`medmonai.deploy` (one release).
"""
