rule prepare_data:
    output:
        npz="results/data/{dataset}.npz",
        meta="results/data/{dataset}.json",
    params:
        settings=lambda w: as_arg(
            {
                "source": config["datasets"][w.dataset]["source"],
                "options": dataset_options(config, w.dataset),
                "image_size": config["image_size"],
                "channels": config["channels"],
            }
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    log:
        "results/logs/prepare_data/{dataset}.log",
    shell:
        "{GANBENCH} prepare-data --name {wildcards.dataset} --settings {params.settings} --output {output.npz} 2>&1 | tee {log}"


rule split_source:
    input:
        lambda w: dataset_file(config["sources"][w.source]["dataset"]),
    output:
        "results/splits/sources/{source}.json",
    params:
        settings=lambda w: as_arg({"spec": config["sources"][w.source], "split_seed": config["split_seed"]}),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        "results/logs/split_source/{source}.log",
    shell:
        "{GANBENCH} split-source --name {wildcards.source} --settings {params.settings} --dataset {input} --output {output} 2>&1 | tee {log}"


rule split_meta:
    input:
        manifest="results/splits/sources/{source}.json",
        dataset=lambda w: dataset_file(config["sources"][w.source]["dataset"]),
    output:
        "results/splits/meta/{source}.json",
    params:
        settings=lambda w: as_arg({**config["meta"], "split_seed": config["split_seed"]}),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        "results/logs/split_meta/{source}.log",
    shell:
        "{GANBENCH} split-meta --settings {params.settings} --source-manifest {input.manifest} --dataset {input.dataset} "
        "--output {output} 2>&1 | tee {log}"


rule split_task:
    input:
        source=lambda w: f"results/splits/sources/{task_source(w.task)}.json",
        dataset=lambda w: dataset_file(config["tasks"][w.task]["target"]["dataset"]),
    output:
        "results/splits/tasks/{task}.json",
    params:
        settings=lambda w: as_arg(
            {
                "spec": config["tasks"][w.task],
                "shots": config["shots"],
                "split_draws": config["split_draws"],
                "split_seed": config["split_seed"],
            }
        ),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        "results/logs/split_task/{task}.log",
    shell:
        "{GANBENCH} split-task --name {wildcards.task} --settings {params.settings} --source-manifest {input.source} "
        "--dataset {input.dataset} --output {output} 2>&1 | tee {log}"


rule train_encoder:
    input:
        manifests=expand("results/splits/tasks/{task}.json", task=sorted(config["tasks"])),
        datasets=[dataset_file(name) for name in DATASETS_USED],
    output:
        "results/encoder/encoder.safetensors",
    params:
        settings=as_arg(config["encoder"]),
        datasets=" ".join(f"--dataset {name}={dataset_file(name)}" for name in DATASETS_USED),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        "results/logs/train_encoder.log",
    shell:
        "{GANBENCH} --threads {threads} train-encoder --settings {params.settings} --manifests {input.manifests} "
        "{params.datasets} --output {output} 2>&1 | tee {log}"
