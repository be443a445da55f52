rule pretrain:
    input:
        manifest="results/splits/sources/{source}.json",
        dataset=lambda w: dataset_file(config["sources"][w.source]["dataset"]),
    output:
        checkpoint="results/pretrain/{source}/seed{seed}/checkpoint.pt",
        config="results/pretrain/{source}/seed{seed}/config.json",
    params:
        settings=lambda w: as_arg(
            {
                "architecture": config["architecture"],
                "train": config["pretrain"]["train"],
                "seed": int(w.seed),
                "device": config["device"],
            }
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "results/logs/pretrain/{source}/seed{seed}.log",
    benchmark:
        "results/benchmarks/pretrain/{source}/seed{seed}.tsv"
    shell:
        "{GANBENCH} --threads {threads} pretrain --settings {params.settings} --manifest {input.manifest} "
        "--dataset {input.dataset} --output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"


rule meta_train:
    input:
        manifest="results/splits/meta/{source}.json",
        dataset=lambda w: dataset_file(config["sources"][w.source]["dataset"]),
    output:
        checkpoint="results/metatrain/{source}/{method}/seed{seed}/checkpoint.pt",
        config="results/metatrain/{source}/{method}/seed{seed}/config.json",
    params:
        settings=lambda w: as_arg(
            {
                "method": w.method,
                "method_hparams": method_hparams(config, w.method),
                "architecture": config["architecture"],
                "seed": int(w.seed),
                "device": config["device"],
            }
        ),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "results/logs/meta_train/{source}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/meta_train/{source}/{method}/seed{seed}.tsv"
    shell:
        "{GANBENCH} --threads {threads} meta-train --settings {params.settings} --manifest {input.manifest} "
        "--dataset {input.dataset} --output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"


rule adapt:
    input:
        unpack(adapt_inputs),
    output:
        checkpoint="results/runs/{task}/k{shots}/{method}/seed{seed}/checkpoint.pt",
        config="results/runs/{task}/k{shots}/{method}/seed{seed}/config.json",
        train_log="results/runs/{task}/k{shots}/{method}/seed{seed}/train_log.jsonl",
    params:
        settings=adapt_settings,
        artefacts=lambda w: " ".join(f"--artefact {name}={path}" for name, path in method_artefacts(w).items()),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    log:
        "results/logs/adapt/{task}/k{shots}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/adapt/{task}/k{shots}/{method}/seed{seed}.tsv"
    shell:
        "{GANBENCH} --threads {threads} adapt --settings {params.settings} --manifest {input.manifest} "
        "--dataset {input.dataset} --encoder {input.encoder} {params.artefacts} "
        "--output-dir $(dirname {output.checkpoint}) 2>&1 | tee {log}"
