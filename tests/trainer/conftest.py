"""tests/trainer: training, evaluation and export. They need the ``train`` extra (TensorFlow, Keras, scikit-learn,
scipy, matplotlib, tqdm); without it the area is skipped. Shared fixtures: a synthetic Kaggle folder and one tiny
TensorFlow run, made once per session."""

from __future__ import annotations

import pytest

for _module in ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "tqdm"):
    pytest.importorskip(_module, reason=f"the trainer's stack is not installed ({_module}): "
                                        "pip install -e '.[train,dev]'")


@pytest.fixture(scope="session")
def synthetic_kaggle(tmp_path_factory):
    """16 synthetic photographs of 8 patients in the Kaggle layout (made by trainer.synthetic, no real data)."""
    from trainer.synthetic import write_kaggle_folder

    root = tmp_path_factory.mktemp("kaggle")
    write_kaggle_folder(root, n_patients=8, size=224, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tf_run(synthetic_kaggle, tmp_path_factory):
    """A 2-epoch tiny run under the TensorFlow backend (the test process's backend)."""
    from trainer.training.config import load_train_config
    from trainer.training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny_tf"
    lines: list[str] = []
    cfg = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle), "epochs": 2})
    summary = train(cfg, run_dir, log=lines.append)
    return run_dir, summary, lines
