"""Moved: see :mod:`siamkit.supervised`, :mod:`siamkit.analysis` and :mod:`siamkit.export`.

Fine-tuning and distillation are :mod:`siamkit.supervised`'s, the evaluation of a checkpoint and
the report :mod:`siamkit.analysis`'s, export and plain models :mod:`siamkit.export`'s.
``siamkit.protocols.export`` still works, with a :class:`DeprecationWarning`.
"""
