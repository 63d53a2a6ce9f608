"""Export: a Keras CAM model (or a run folder) -> checked TFLite bundles ``models/<id>/`` (docs/export.md).

``convert`` (TFLite float16 / int8 with the CAM output), ``representative`` (calibration and held-out images),
``parity`` (the TFLite model against Keras, through the unit's runtime), ``bundle`` (one bundle with its card and
self-test), ``run`` (a run folder in several formats: the body of ``trainer export``).

    from trainer.export.bundle import ExportOptions, export_bundle
    from trainer.export.run import export_run

Nothing is imported here, so importing a submodule does not load TensorFlow before it needs to.
"""
