"""A loader's view plan: what the workers cut and how the training device finishes it.

One :class:`Views` serves every storage. With images in memory, batches hold whole uint8 images
and the device does everything (:class:`~siamkit.data.augment.BatchViews`: crop, flip, colour,
blur). With streamed or sharded images, DataLoader workers decode each image and cut each view's
crop from the whole image (:func:`~siamkit.data.decode.decode_views`, the :attr:`Views.specs`),
and the device does the rest on whole batches (:meth:`BatchViews.finish`). Both paths draw the
same distribution of crops and colour changes (``tests/data/test_stream.py`` checks it).
"""

from __future__ import annotations

import torch

from siamkit.config import AugmentConfig
from siamkit.data.augment import BatchViews, eval_views, finish_crops
from siamkit.data.decode import ViewSpec


class Views:
    """The views a loader produces: random views by recipes, or the evaluation centre view.

    Args:
        recipes: One augmentation recipe per view (a method's ``view_recipes``); ``None`` for
            the centre view.
        centre: The recipe whose evaluation size and normalisation the centre view uses.

    Example:
        >>> train = Views(method.view_recipes(cfg.augment))   # two random views per image
        >>> test = Views.centre(cfg.augment)                   # one centre view per image
    """

    def __init__(
        self, recipes: list[AugmentConfig] | None = None, centre: AugmentConfig | None = None
    ) -> None:
        if (recipes is None) == (centre is None):
            raise ValueError("Views takes recipes or a centre recipe, not both")
        self.recipes = recipes
        self.centre_recipe = centre
        self._batch_views = [BatchViews(r) for r in recipes] if recipes else []

    @classmethod
    def centre(cls, augment: AugmentConfig) -> Views:
        """The deterministic evaluation view at ``augment``'s evaluation size."""
        return cls(centre=augment)

    @property
    def specs(self) -> list[ViewSpec]:
        """The geometric part of each view, for workers that cut crops."""
        if self.centre_recipe is not None:
            return [ViewSpec(self.centre_recipe.effective_eval_size)]
        assert self.recipes is not None
        return [ViewSpec(r.size, r.crop_scale, r.crop_ratio) for r in self.recipes]

    def __call__(
        self, images: torch.Tensor | list[torch.Tensor], generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Finish a batch on its device.

        Args:
            images: ``(B, 3, H, W)`` uint8 whole images (memory storage), or one ``(B, 3, S, S)``
                uint8 crop per view (cut by workers).
            generator: Optional RNG on the batch's device.

        Returns:
            One ``(B, 3, S, S)`` float32 normalised tensor per view.
        """
        if self.centre_recipe is not None:
            if isinstance(images, torch.Tensor):
                return [eval_views(images, self.centre_recipe)]
            return [finish_crops(images[0], self.centre_recipe)]
        if isinstance(images, torch.Tensor):
            return [v(images, generator) for v in self._batch_views]
        return [
            v.finish(crop.float().div_(255), generator)
            for v, crop in zip(self._batch_views, images, strict=True)
        ]
