"""A short training on a slice of the real Fashion-MNIST must reach a stated accuracy."""

from __future__ import annotations

from cnnlab.train import TrainConfig, fit

# fmnist-cnn, 3,000 training images, 3 epochs, fp32: measured 85.3% on the full 10,000-image test set
# (chance is 10%; a broken pipeline, e.g. labels shuffled against images, stays near it).
MIN_ACCURACY = 0.78


def test_lecture_cnn_learns_fashion_mnist_from_a_slice(real_fmnist_dir, tmp_path):
    cfg = TrainConfig(model="fmnist-cnn", data_dir=str(real_fmnist_dir), subset=3000, val_size=500, epochs=3,
                      batch_size=100, augment=False, precision="fp32", device="cpu")
    metrics = fit(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert metrics["test_images"] == 10_000
    assert metrics["test_accuracy"] >= MIN_ACCURACY, metrics["test_accuracy"]
    # every class is learned, not just the easy ones
    assert min(metrics["per_class_accuracy"].values()) > 0.3, metrics["per_class_accuracy"]
