"""Supervised training on a pretrained (or fresh) network: the few-label protocols.

- :mod:`~siamkit.supervised.finetune`: fine-tuning with few labels (SimCLR, SimCLRv2);
- :mod:`~siamkit.supervised.distill`: SimCLRv2's distillation on unlabelled images;
- :mod:`~siamkit.supervised.run`: the steps every such run shares (check, train, read, write);
- :mod:`~siamkit.supervised.sgd`: their settings (:class:`~siamkit.supervised.sgd.SGDConfig`)
  and the Lightning module that trains them on the engine of pretraining;
- :mod:`~siamkit.supervised.classifier`: the classifier they train and its checkpoint.

The functions ``finetune()`` and ``distill()`` are not re-exported here: they would shadow their
modules; import them from those modules.
"""
