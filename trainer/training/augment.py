"""Random augmentation of standardised fundus images as one Keras layer (runs on the accelerator, any backend).

DESIGN.md §2.2: random brightness and contrast, random rotation, horizontal and vertical flips. The input is the
standardised image (mean 0, std 1 inside the field of view, 0 outside), so brightness is an additive shift and
contrast a multiplicative factor, both applied inside the field of view only; the rotation fills with 0 (= the
background). Doing it on the device in the training graph measured faster than in the input pipeline
(bench/bench_train.py: end-to-end vs model-only step).
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np
from keras import layers, ops


def augment_batch(images: np.ndarray, rng: np.random.Generator, brightness: float = 0.2, contrast: float = 0.2,
                  rotation_deg: float = 180.0, hflip: bool = True, vflip: bool = True,
                  fov: np.ndarray | None = None) -> np.ndarray:
    """The augmentation of :class:`FundusAugment`, with OpenCV on the host (the ``pipeline`` placement).

    Per image: contrast factor and brightness shift inside the FOV, then the flips and the rotation as one
    ``cv2.warpAffine`` (flip then rotate, composed into one matrix: one resampling pass, no flipped copy).

    Args:
        images: float32 (N, S, S, 3) standardised images (0 outside the FOV).
        rng: the random generator (seeded per epoch and batch by the input pipeline).
        brightness, contrast, rotation_deg, hflip, vflip: as :class:`FundusAugment`.
        fov: bool (N, S, S) field-of-view masks (the input pipeline keeps them with the preloaded images);
            None = the non-zero pixels (what the device layer uses; costs about half of the work at 256 px).

    Returns:
        float32 (N, S, S, 3) augmented images.
    """
    out = np.empty(images.shape, np.float32)
    height, width = images.shape[1:3]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    for i in range(images.shape[0]):
        image = images[i]
        shift = rng.uniform(-brightness, brightness)
        factor = rng.uniform(1.0 - contrast, 1.0 + contrast)
        if brightness > 0 or contrast > 0:  # = (image * factor + shift) * fov, as the image is 0 outside the FOV
            mask = fov[i] if fov is not None else np.any(image != 0, axis=-1)
            image = image * np.float32(factor)
            image += (np.float32(shift) * mask)[..., None]
        flip_h = hflip and rng.random() < 0.5
        flip_v = vflip and rng.random() < 0.5
        if rotation_deg <= 0:
            out[i] = image[::-1 if flip_v else 1, ::-1 if flip_h else 1]
            continue
        flip = np.array([[-1.0 if flip_h else 1.0, 0.0, width - 1.0 if flip_h else 0.0],
                         [0.0, -1.0 if flip_v else 1.0, height - 1.0 if flip_v else 0.0], [0.0, 0.0, 1.0]])
        rotate = cv2.getRotationMatrix2D(centre, rng.uniform(-rotation_deg, rotation_deg), 1.0)
        cv2.warpAffine(np.ascontiguousarray(image, np.float32), rotate @ flip, (width, height), dst=out[i],
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


@keras.saving.register_keras_serializable(package="trainer")
class FundusAugment(layers.Layer):
    """Per-image random flips, rotation, brightness and contrast; identity when ``training`` is false.

    Args:
        brightness: max additive shift in standard deviations (uniform in [-b, b]).
        contrast: max relative contrast change (factor uniform in [1 - c, 1 + c]).
        rotation_deg: max rotation either way in degrees (uniform).
        hflip: flip left-right with probability 0.5.
        vflip: flip top-bottom with probability 0.5.
        seed: seed of the layer's random stream (its state is a variable, saved with checkpoints).

    Example::

        aug = FundusAugment(brightness=0.2, contrast=0.2, rotation_deg=180)
        y = aug(images, training=True)      # (N, S, S, 3) -> (N, S, S, 3)
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, rotation_deg: float = 180.0,
                 hflip: bool = True, vflip: bool = True, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.rotation_deg = float(rotation_deg)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="augment_seed")

    def _flip(self, images, axis: int, batch: int):
        coin = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < 0.5
        return ops.where(coin, ops.flip(images, axis=axis), images)

    def _rotate(self, images, batch: int):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        max_angle = self.rotation_deg * math.pi / 180.0
        angle = keras.random.uniform((batch,), -max_angle, max_angle, seed=self.seed_generator)
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx = (ops.cast(width, "float32") - 1.0) / 2.0
        cy = (ops.cast(height, "float32") - 1.0) / 2.0
        # Output pixel (x, y) samples the input at R(angle) @ (x - c) + c.
        transform = ops.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy,
                               ops.zeros_like(cos), ops.zeros_like(cos)], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="constant",
                                          fill_value=0, data_format="channels_last")

    def call(self, images, training=None):
        if not training:
            return images
        images = ops.cast(images, "float32")
        batch = ops.shape(images)[0]
        fov = ops.cast(ops.any(ops.not_equal(images, 0.0), axis=-1, keepdims=True), "float32")
        if self.brightness > 0 or self.contrast > 0:
            shift = keras.random.uniform((batch, 1, 1, 1), -self.brightness, self.brightness,
                                         seed=self.seed_generator)
            factor = keras.random.uniform((batch, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast,
                                          seed=self.seed_generator)
            images = (images * factor + shift) * fov
        if self.hflip:
            images = self._flip(images, axis=2, batch=batch)
        if self.vflip:
            images = self._flip(images, axis=1, batch=batch)
        if self.rotation_deg > 0:
            images = self._rotate(images, batch)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(brightness=self.brightness, contrast=self.contrast, rotation_deg=self.rotation_deg,
                      hflip=self.hflip, vflip=self.vflip, seed=self.seed)
        return config
