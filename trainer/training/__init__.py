"""Training the CAM network: the validated config and its presets, the input pipeline and augmentation, the
training loop with checkpoints and ``--resume``, several devices, and the run folder (docs/training.md).

    from trainer.training.config import load_train_config
    from trainer.training.train import train            # imports Keras
    run_dir = train(load_train_config("tiny", overrides=["data.path=/tmp/kaggle_synth"]))

Nothing is imported here, so reading or checking a config does not load Keras.
"""
