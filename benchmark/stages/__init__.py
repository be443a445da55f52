"""The pipeline's stages, one module each, in the order they run; each is one workflow rule and one `ganbench`
subcommand, and exposes one function of the same name (`split` has one per kind of manifest):

    prepare_data -> split (split_source, split_task, split_meta) -> train_encoder -> pretrain, meta_train
    -> adapt -> evaluate -> collect -> table

A stage opens its inputs, calls the library below it (data, splits, encoder, models, training, meta-learning,
metrics, selection, results) and writes its outputs atomically. It takes its settings as one object
(`benchmark.settings`; `collect` and `table` have none) and its files as arguments. Training and evaluation
stages open their inputs with `benchmark.stage_inputs`. The library never imports a stage.
"""
