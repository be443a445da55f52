rule pretrain:
    input:
        manifest=rules.split_source.output[0],
        dataset=lambda w: PLAN.source_dataset(w.source),
    output:
        checkpoint=layout.PRETRAIN / layout.StageFolder.CHECKPOINT,
        config=layout.PRETRAIN / layout.StageFolder.CONFIG,
    params:
        settings=lambda w: as_arg(PLAN.pretrain(int(w.seed))),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS_PER_JOB,
    log:
        layout.log("pretrain", layout.PRETRAIN_KEY),
    benchmark:
        layout.benchmark("pretrain", layout.PRETRAIN_KEY)
    shell:
        "ganbench --threads {threads} pretrain --settings {params.settings} --manifest {input.manifest} "
        "--dataset {input.dataset} --output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"


rule meta_train:
    input:
        unpack(meta_train_inputs),
    output:
        checkpoint=layout.META_TRAIN / layout.StageFolder.CHECKPOINT,
        config=layout.META_TRAIN / layout.StageFolder.CONFIG,
    params:
        settings=lambda w: as_arg(PLAN.meta_train(w.method, int(w.seed), int(w.draw))),
        artefacts=lambda w: " ".join(
            f"--artefact {name}={path}" for name, path in PLAN.meta_artefacts(w.source, w.method, int(w.seed), int(w.draw)).items()
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPUS_PER_JOB,
    log:
        layout.log("meta_train", layout.META_TRAIN_KEY),
    benchmark:
        layout.benchmark("meta_train", layout.META_TRAIN_KEY)
    shell:
        "ganbench --threads {threads} meta-train --settings {params.settings} --manifest {input.manifest} "
        "--dataset {input.dataset} {params.artefacts} --output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"


rule build_artefact:
    input:
        unpack(plugin_artefact_inputs),
    output:
        layout.PLUGIN_ARTEFACT,
    params:
        settings=lambda w: as_arg(PLAN.build_artefact(w.artefact, int(w.seed))),
        artefacts=lambda w: " ".join(f"--artefact {name}={path}" for name, path in plugin_artefact_inputs(w).items()),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
        gpu=GPUS_PER_JOB,
    log:
        layout.log("build_artefact", layout.PLUGIN_ARTEFACT_KEY),
    benchmark:
        layout.benchmark("build_artefact", layout.PLUGIN_ARTEFACT_KEY)
    shell:
        "ganbench --threads {threads} build-artefact --settings {params.settings} {params.artefacts} --output {output} 2>&1 | tee {log}"


# One job per run (`seed_batching: separate`), or one job per seed group: every seed of a (task, K, method,
# hyperparameter draw), trained one after another or as one batched model (docs/scaling.md).
if SEED_BATCHING == "separate":

    rule adapt:
        input:
            unpack(adapt_inputs),
        output:
            checkpoint=layout.RUN / layout.StageFolder.CHECKPOINT,
            config=layout.RUN / layout.StageFolder.CONFIG,
            train_log=layout.RUN / layout.StageFolder.TRAIN_LOG,
        params:
            settings=lambda w: as_arg(PLAN.adapt(run_of(w))),
            artefacts=lambda w: " ".join(f"--artefact {name}={path}" for name, path in PLAN.artefacts(run_of(w)).items()),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
            gpu=GPUS_PER_JOB,
        log:
            layout.log("adapt", layout.RUN_KEY),
        benchmark:
            layout.benchmark("adapt", layout.RUN_KEY)
        shell:
            "ganbench --threads {threads} adapt --settings {params.settings} --manifest {input.manifest} "
            "--dataset {input.dataset} --encoder {input.encoder} {params.artefacts} "
            "--output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"

else:

    rule adapt_seeds:
        input:
            unpack(adapt_group_inputs),
        output:
            checkpoints=expand(layout.RUN / layout.StageFolder.CHECKPOINT, seed=config["seeds"], allow_missing=True),
            configs=expand(layout.RUN / layout.StageFolder.CONFIG, seed=config["seeds"], allow_missing=True),
            train_logs=expand(layout.RUN / layout.StageFolder.TRAIN_LOG, seed=config["seeds"], allow_missing=True),
        params:
            runs=lambda w: shlex.quote(PLAN.adapt_group_json(w.task, int(w.shots), w.method, int(w.draw))),
            batching=SEED_BATCHING,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=lambda w: 30 * len(config["seeds"]),
            gpu=GPUS_PER_JOB,
        log:
            layout.log("adapt_seeds", layout.RUN_GROUP_KEY),
        benchmark:
            layout.benchmark("adapt_seeds", layout.RUN_GROUP_KEY)
        shell:
            "ganbench --threads {threads} adapt-seeds --batching {params.batching} --runs {params.runs} "
            "--manifest {input.manifest} --dataset {input.dataset} --encoder {input.encoder} 2>&1 | tee {log}"
