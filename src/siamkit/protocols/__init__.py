"""What is built on the measures for a checkpoint.

The functions behind ``siamkit eval``, ``report``, ``export`` and ``embed``.

- :mod:`~siamkit.protocols.evaluate`: kNN, linear probe, representation metrics and embeddings
  of a pretraining checkpoint (embeddings also of an exported or a torchvision/timm model);
- :mod:`~siamkit.protocols.finetune`: fine-tuning with few labels (SimCLR, SimCLRv2);
- :mod:`~siamkit.protocols.distill`: SimCLRv2's distillation;
- :mod:`~siamkit.protocols.report`, :mod:`~siamkit.protocols.plots`: the run report;
- :mod:`~siamkit.protocols.export`: the backbone for other libraries (safetensors, torchvision,
  timm, ONNX);
- :mod:`~siamkit.protocols.plain_models`: models from exported files and torchvision/timm
  weights, for embeddings.

The functions ``finetune()`` and ``distill()`` are not re-exported here: they would shadow their
modules; import them from those modules.
"""
