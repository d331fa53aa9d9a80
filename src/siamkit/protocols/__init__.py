"""What is built on the measures for a checkpoint.

The functions behind ``siamkit eval``, ``report``, ``export`` and ``embed``.

- :mod:`~siamkit.protocols.evaluate`: kNN, linear probe, representation metrics and embeddings
  of a pretraining checkpoint;
- :mod:`~siamkit.protocols.finetune`: fine-tuning with few labels (SimCLR, SimCLRv2);
- :mod:`~siamkit.protocols.distill`: SimCLRv2's distillation;
- :mod:`~siamkit.protocols.report`, :mod:`~siamkit.protocols.plots`: the run report;
- :mod:`~siamkit.protocols.export`: backbone weights for other libraries.

The functions ``finetune()`` and ``distill()`` are not re-exported here: they would shadow their
modules; import them from those modules.
"""
