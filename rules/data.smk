rule prepare_data:
    output:
        npz=layout.DATASET,
        meta=layout.DATASET_METADATA,
    params:
        settings=lambda w: as_arg(PLAN.prepare_data(w.dataset)),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    log:
        layout.log("prepare_data", layout.DATASET_KEY),
    shell:
        "ganbench prepare-data --name {wildcards.dataset} --settings {params.settings} --output {output.npz} 2>&1 | tee {log}"


rule split_source:
    input:
        lambda w: PLAN.source_dataset(w.source),
    output:
        layout.SOURCE_SPLIT,
    params:
        settings=lambda w: as_arg(PLAN.split_source(w.source)),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        layout.log("split_source", layout.SOURCE_KEY),
    shell:
        "ganbench split-source --name {wildcards.source} --settings {params.settings} --dataset {input} --output {output} 2>&1 | tee {log}"


rule split_meta:
    input:
        manifest=rules.split_source.output[0],
        dataset=lambda w: PLAN.source_dataset(w.source),
    output:
        layout.META_SPLIT,
    params:
        settings=as_arg(PLAN.split_meta()),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        layout.log("split_meta", layout.SOURCE_KEY),
    shell:
        "ganbench split-meta --settings {params.settings} --source-manifest {input.manifest} --dataset {input.dataset} "
        "--output {output} 2>&1 | tee {log}"


rule split_task:
    input:
        source=lambda w: PLAN.task_source_split(w.task),
        source_dataset=lambda w: PLAN.task_source_dataset(w.task),
        dataset=lambda w: PLAN.task_dataset(w.task),
    output:
        layout.TASK_SPLIT,
    params:
        settings=lambda w: as_arg(PLAN.split_task(w.task)),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        layout.log("split_task", layout.TASK_KEY),
    shell:
        "ganbench split-task --name {wildcards.task} --settings {params.settings} --source-manifest {input.source} "
        "--source-dataset {input.source_dataset} --dataset {input.dataset} --output {output} 2>&1 | tee {log}"


rule train_encoder:
    input:
        manifests=expand(rules.split_task.output[0], task=sorted(config["tasks"])),
        datasets=[layout.DATASET.fill(dataset=name) for name in PLAN.datasets_used()],
    output:
        layout.ENCODER,
    params:
        settings=as_arg(PLAN.train_encoder()),
        datasets=" ".join(f"--dataset {name}={layout.DATASET.fill(dataset=name)}" for name in PLAN.datasets_used()),
    threads: PLAN.config["encoder"]["threads"]  # the encoder trains on these threads whatever --cores grants (encoder.threads)
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=GPUS_PER_JOB,
    log:
        layout.log("train_encoder"),
    shell:
        "ganbench --threads {threads} train-encoder --settings {params.settings} --manifests {input.manifests} "
        "{params.datasets} --output {output} 2>&1 | tee {log}"
