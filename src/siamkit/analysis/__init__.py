"""What a run's checkpoint shows: the functions behind ``siamkit eval``, ``report`` and ``embed``.

- :mod:`~siamkit.analysis.run_eval`: kNN, linear probe, representation metrics and embeddings
  of a pretraining checkpoint (embeddings also of an exported or a torchvision/timm model);
- :mod:`~siamkit.analysis.checkpoint_mi`: mutual-information estimates of a checkpoint;
- :mod:`~siamkit.analysis.run_report`, :mod:`~siamkit.analysis.plots`,
  :mod:`~siamkit.analysis.html`: the run report, its figures and its page.

The measures themselves (features, kNN, probes, metrics) are :mod:`siamkit.eval`'s.
"""
