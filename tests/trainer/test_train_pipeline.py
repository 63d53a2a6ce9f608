"""Input pipeline and on-device augmentation: batches, class weights, per-epoch shuffles, FOV-aware augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from device.preprocess import NORMALISATIONS, standardise
from trainer.training.augment import FundusAugment, augment_batch
from trainer.training.input_pipeline import (
    PREFETCH_BYTES,
    BatchSequence,
    ImageSet,
    class_weights,
    load_images,
    preload_dtype,
    preload_standardised,
)

SIZE = 32


def _disc(size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (xx - c) ** 2 + (yy - c) ** 2 <= (0.45 * size) ** 2


def _image_set(n: int = 10, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(20, 230, (n, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.repeat(_disc()[None], n, axis=0)
    rgb[~masks] = 0
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 1, 0, 0][:n])
    return ImageSet(ids=np.array([f"{i}_left" for i in range(n)]), patients=np.array([str(i) for i in range(n)]),
                    levels=labels * 2, labels=labels, splits=np.array(["train"] * n),
                    read=lambda idx: (rgb[idx], masks[idx]), size=SIZE, source="memory", skipped=[])


def test_balanced_class_weights_equalise_the_classes():
    labels = np.array([0] * 8 + [1] * 2)
    w = class_weights(labels, "balanced")
    np.testing.assert_allclose(w, [10 / 16, 10 / 4])
    assert w[labels].sum() / labels.size == pytest.approx(1.0)  # mean weight 1: same loss scale as unweighted
    assert w[0] * 8 == pytest.approx(w[1] * 2)
    np.testing.assert_array_equal(class_weights(labels, "none"), [1.0, 1.0])


def test_training_batches_are_standardised_weighted_and_shuffled_per_epoch():
    images = _image_set()
    weights = class_weights(images.labels, "balanced")
    seq = BatchSequence(images, np.arange(10), batch_size=4, weights=weights, shuffle_seed=3)
    assert len(seq) == 2  # the incomplete last batch is dropped in training
    x, y, w = seq[0]
    assert x.shape == (4, SIZE, SIZE, 3) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(w, weights[y])
    inside = x[0][_disc()]
    assert abs(inside.mean()) < 1e-4 and inside.std() == pytest.approx(1.0, abs=1e-3)
    assert np.all(x[0][~_disc()] == 0)
    order0 = seq._order.copy()
    seq.on_epoch_end()
    order1 = seq._order.copy()
    assert not np.array_equal(order0, order1) and sorted(order1) == list(range(10))
    again = BatchSequence(images, np.arange(10), batch_size=4, weights=weights, shuffle_seed=3, first_epoch=1)
    np.testing.assert_array_equal(again._order, order1)  # a resumed run sees the same epoch order


def test_evaluation_batches_keep_order_cover_everything_and_flip_for_tta():
    images = _image_set()
    plain = BatchSequence(images, np.arange(10), batch_size=4)
    flipped = BatchSequence(images, np.arange(10), batch_size=4, hflip=True)
    assert len(plain) == 3
    batches = [plain[i][0] for i in range(3)]
    assert sum(b.shape[0] for b in batches) == 10
    np.testing.assert_array_equal(flipped[2][0], batches[2][:, :, ::-1])


def _augment(impl: str, x: np.ndarray, **kwargs) -> np.ndarray:
    """Run the device layer or the OpenCV pipeline version with only the given augmentations switched on."""
    base = dict(brightness=0.0, contrast=0.0, rotation_deg=0.0, hflip=False, vflip=False)
    base.update(kwargs)
    if impl == "device":
        return np.asarray(FundusAugment(**base, seed=1)(x, training=True))
    return augment_batch(x, np.random.default_rng(1), **base)


IMPLEMENTATIONS = pytest.mark.parametrize("impl", ["device", "pipeline"])


def test_augmentation_is_the_identity_at_inference():
    x = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype("float32")
    out = FundusAugment(seed=0)(x, training=False)
    np.testing.assert_array_equal(np.asarray(out), x)


@IMPLEMENTATIONS
def test_brightness_and_contrast_act_inside_the_fov_only_within_their_ranges(impl):
    x = np.random.default_rng(0).standard_normal((6, SIZE, SIZE, 3)).astype("float32")
    x[:, ~_disc()] = 0
    out = _augment(impl, x, brightness=0.3, contrast=0.2)
    assert np.all(out[:, ~_disc()] == 0)
    factors = []
    for i in range(6):
        inside_in, inside_out = x[i][_disc()].ravel(), out[i][_disc()].ravel()
        factor, shift = np.polyfit(inside_in, inside_out, 1)
        assert 0.8 - 1e-4 <= factor <= 1.2 + 1e-4 and -0.3 - 1e-4 <= shift <= 0.3 + 1e-4
        np.testing.assert_allclose(inside_out, inside_in * factor + shift, atol=1e-4)
        factors.append(factor)
    assert np.ptp(factors) > 0.01  # a different draw per image


@IMPLEMENTATIONS
def test_flips_give_the_image_or_its_mirror_and_both_occur(impl):
    x = np.random.default_rng(1).standard_normal((16, SIZE, SIZE, 3)).astype("float32")
    out = _augment(impl, x, hflip=True)
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


@IMPLEMENTATIONS
def test_rotation_turns_about_the_image_centre(impl):
    yy, xx = np.mgrid[:SIZE, :SIZE].astype("float32")
    c = (SIZE - 1) / 2
    radial = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) * _disc()  # rotation invariant about the centre
    x = np.repeat(radial[None, :, :, None], 3, axis=-1).repeat(4, axis=0).astype("float32")
    out = _augment(impl, x, rotation_deg=180.0)
    inner = (np.sqrt((xx - c) ** 2 + (yy - c) ** 2) < 0.4 * SIZE)
    np.testing.assert_allclose(out[:, inner], x[:, inner], atol=0.6)  # bilinear resampling error < 1 px
    spot = np.zeros_like(x)
    spot[:, 4:8, 14:18] = 1.0  # an off-centre spot moves with the rotation
    moved = _augment(impl, spot, rotation_deg=180.0)
    assert np.mean([np.abs(m - s).sum() > 1.0 for m, s in zip(moved, spot)]) >= 0.75
    assert moved.sum() == pytest.approx(spot.sum(), rel=0.1)  # moved, not lost


def test_pipeline_augmentation_is_seeded_per_epoch_and_batch():
    images = _image_set()
    kwargs = dict(brightness=0.2, contrast=0.2, rotation_deg=180.0, hflip=True, vflip=True)
    weights = class_weights(images.labels, "balanced")
    a = BatchSequence(images, np.arange(10), 4, weights=weights, shuffle_seed=5, augment=kwargs, first_epoch=2)
    b = BatchSequence(images, np.arange(10), 4, weights=weights, shuffle_seed=5, augment=kwargs, first_epoch=2)
    np.testing.assert_array_equal(a[1][0], b[1][0])  # a resumed run augments exactly as the killed one would have
    plain = BatchSequence(images, np.arange(10), 4, weights=weights, shuffle_seed=5, first_epoch=2)
    assert not np.allclose(a[1][0], plain[1][0])
    b.on_epoch_end()
    assert not np.allclose(a[1][0], b[1][0])


def test_host_augmentation_runs_opencv_single_threaded():
    """The pipeline's threads parallelise over batches; OpenCV's own threads would only take CPU from the step."""
    import cv2

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        images = _image_set()
        weights = class_weights(images.labels, "balanced")
        BatchSequence(images, np.arange(10), 4, weights=weights, shuffle_seed=5)
        assert cv2.getNumThreads() == 2  # no host augmentation: OpenCV left alone
        kwargs = dict(brightness=0.2, contrast=0.2, rotation_deg=180.0, hflip=True, vflip=True)
        BatchSequence(images, np.arange(10), 4, weights=weights, shuffle_seed=5, augment=kwargs, workers=2)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_augment_config_round_trip():
    layer = FundusAugment(brightness=0.1, contrast=0.3, rotation_deg=90, hflip=False, vflip=True, seed=7)
    clone = FundusAugment.from_config(layer.get_config())
    assert (clone.brightness, clone.contrast, clone.rotation_deg, clone.hflip, clone.vflip, clone.seed) == (
        0.1, 0.3, 90.0, False, True, 7)


AUGMENT = dict(brightness=0.2, contrast=0.2, rotation_deg=180.0, hflip=True, vflip=True)


class _CountingReads:
    """Wraps an ImageSet's reader and counts the images it was asked for."""

    def __init__(self, images: ImageSet):
        self.read, self.images = images.read, 0

    def __call__(self, idx):
        self.images += len(idx)
        return self.read(idx)


@pytest.mark.parametrize("method", NORMALISATIONS)
def test_normalising_once_gives_the_batches_of_normalising_per_batch(method):
    images = _image_set()
    weights = class_weights(images.labels, "balanced")
    once = preload_standardised(images, method, "float32", workers=2)
    counter = _CountingReads(once)
    once.read = counter
    for kwargs in (dict(weights=weights, shuffle_seed=3, first_epoch=1), dict(weights=weights, shuffle_seed=3,
                   augment=AUGMENT), dict(hflip=True)):  # training, training augmented in the pipeline, evaluation
        per_batch = BatchSequence(images, np.arange(10), 4, method, **kwargs)
        preloaded = BatchSequence(once, np.arange(10), 4, method, **kwargs)
        assert len(per_batch) == len(preloaded)
        for i in range(len(per_batch)):
            for old, new in zip(per_batch[i], preloaded[i]):
                assert new.dtype == old.dtype
                np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-5)
    assert counter.images == 0  # the batches never read or standardised an image again
    half = preload_standardised(images, method, "float16")
    assert half.standardised.dtype == np.float16 and half.summary()["preloaded"] == f"{method}, float16"
    x16, x32 = (BatchSequence(s, np.arange(10), 5, method)[0][0] for s in (half, images))
    assert x16.dtype == np.float32
    np.testing.assert_allclose(x16, x32, rtol=2e-3, atol=2e-3)
    # a sequence asking for another normalisation than the preloaded one falls back to per-batch standardisation
    other = "scale_127" if method != "scale_127" else "per_image"
    np.testing.assert_allclose(BatchSequence(once, np.arange(10), 5, other)[0][0],
                               BatchSequence(images, np.arange(10), 5, other)[0][0], atol=1e-6)


def test_preload_auto_takes_float32_then_float16_then_per_batch_as_memory_allows():
    need = 100 * 64 * 64 * 3 * 4  # bytes of 100 float32 crops of 64 px
    assert preload_dtype("auto", 100, 64, available=2 * need) == np.float32
    assert preload_dtype("auto", 100, 64, available=need) == np.float16
    assert preload_dtype("auto", 100, 64, available=need // 2) is None
    assert preload_dtype("off", 100, 64, available=10 * need) is None
    assert preload_dtype("float16", 100, 64, available=1) == np.float16  # asked for explicitly: not second-guessed


def test_prefetch_queue_is_two_batches_per_worker_within_the_memory_bound():
    images = _image_set()
    assert BatchSequence(images, np.arange(10), 4, workers=3).max_queue_size == 6
    assert BatchSequence(images, np.arange(10), 4, workers=0).max_queue_size == 2
    big = ImageSet(ids=images.ids, patients=images.patients, levels=images.levels, labels=images.labels,
                   splits=images.splits, read=images.read, size=512, source="memory", skipped=[])
    batch_bytes = 64 * 512 * 512 * 3 * 4
    assert BatchSequence(big, np.arange(10), 64, workers=16).max_queue_size == PREFETCH_BYTES // batch_bytes


def test_folder_and_mixed_sources_are_preloaded_with_the_same_values(synthetic_kaggle, tmp_path):
    from tests.trainer.test_lite0_cam import _flat_copy
    from trainer.training.config import load_train_config

    flat = _flat_copy(synthetic_kaggle, tmp_path / "b", "b")
    sources = [{"name": "kaggle", "path": str(synthetic_kaggle)}, {"name": "flat", "path": str(flat)}]
    for overrides in ({"data.path": str(synthetic_kaggle)}, {"data.source": "mixed", "data.sources": sources}):
        cfg = load_train_config("tiny", overrides={**overrides, "data.normalisation": "local_contrast",
                                                   "data.preload": "float32", "data.workers": "auto"}).data
        plain, once = load_images(cfg, 64), load_images(cfg, 64, preload=True)
        assert plain.standardised is None and once.normalisation == "local_contrast"
        assert type(once) is type(plain) and once.summary()["preloaded"] == "local_contrast, float32"
        idx = np.arange(len(plain.ids))
        np.testing.assert_allclose(once.standardised, standardise(*plain.read(idx), "local_contrast"), atol=1e-6)
        np.testing.assert_array_equal(once.fov, plain.read(idx)[1])  # kept for the augmentation


def test_pipeline_augmentation_with_the_kept_fov_masks_equals_the_non_zero_rule():
    x = np.random.default_rng(2).standard_normal((6, SIZE, SIZE, 3)).astype("float32")
    x[:, ~_disc()] = 0
    masks = np.repeat(_disc()[None], 6, axis=0)
    for kwargs in (AUGMENT, dict(AUGMENT, rotation_deg=0.0), dict(brightness=0.3, contrast=0.0, rotation_deg=0.0)):
        with_masks = augment_batch(x, np.random.default_rng(4), **kwargs, fov=masks)
        np.testing.assert_allclose(with_masks, augment_batch(x, np.random.default_rng(4), **kwargs), atol=1e-6)
        assert not np.allclose(with_masks, x)


def test_the_endless_stream_serves_the_batches_of_the_epochs_one_after_another():
    images = _image_set()
    weights = class_weights(images.labels, "balanced")
    kwargs = dict(weights=weights, shuffle_seed=3, augment=AUGMENT)
    endless = BatchSequence(images, np.arange(10), 4, **kwargs, first_epoch=2, endless=True)
    assert endless.num_batches is None and len(endless) == 2
    by_epoch = BatchSequence(images, np.arange(10), 4, **kwargs, first_epoch=2)
    for i in range(3 * len(by_epoch)):
        if i and i % len(by_epoch) == 0:
            by_epoch.on_epoch_end()
            endless.on_epoch_end()  # Keras still calls it: the index alone decides the epoch
        for a, b in zip(endless[i], by_epoch[i % len(by_epoch)]):
            np.testing.assert_array_equal(a, b)
    assert BatchSequence(images, np.arange(10), 4, endless=True).num_batches == 3  # evaluation: never endless


class _Recording(BatchSequence):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[int] = []

    def __getitem__(self, i):
        self.asked.append(i)
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_keras_keeps_one_endless_iterator_for_the_whole_fit(workers):
    import keras

    images = _image_set()
    seq = _Recording(images, np.arange(10), 4, weights=class_weights(images.labels, "balanced"), shuffle_seed=1,
                     workers=workers, endless=True)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(seq, epochs=3, steps_per_epoch=len(seq), verbose=0)
    # Epochs 2 and 3 continued the stream: a restart at 0 per epoch would replay epoch 0's order and never ask
    # for the later indices. (TensorFlow asks for batches 0 and 1 once more to learn the shapes.)
    assert set(range(3 * len(seq))) <= set(seq.asked) and seq.asked.count(0) <= 2
