rule evaluate:
    input:
        unpack(lambda w: feature_inputs()),
        checkpoint="results/runs/{task}/k{shots}/{method}/seed{seed}/checkpoint.pt",
        config="results/runs/{task}/k{shots}/{method}/seed{seed}/config.json",
        manifest="results/splits/tasks/{task}.json",
        dataset=lambda w: dataset_file(config["tasks"][w.task]["target"]["dataset"]),
    output:
        "results/runs/{task}/k{shots}/{method}/seed{seed}/metrics.json",
    params:
        settings=as_arg({"evaluation": config["evaluation"], "device": config["device"]}),
        # The run's own settings too: a changed adaptation setting must also invalidate an existing metrics.json,
        # even when the run folder's checkpoint is gone (Snakemake does not rerun a missing intermediate file).
        run_settings=adapt_settings,
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    log:
        "results/logs/evaluate/{task}/k{shots}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{task}/k{shots}/{method}/seed{seed}.tsv"
    shell:
        "{GANBENCH} --threads {threads} evaluate --settings {params.settings} --run-dir $(dirname {input.checkpoint}) "
        "--manifest {input.manifest} --dataset {input.dataset} --encoder {input.encoder} --output {output} 2>&1 | tee {log}"


rule collect:
    input:
        [f"{run.run_dir}/metrics.json" for run in RUNS],
    output:
        "results/results.csv",
    log:
        "results/logs/collect.log",
    shell:
        "{GANBENCH} collect --output {output} {input} 2>&1 | tee {log}"


rule table:
    input:
        "results/results.csv",
    output:
        "reports/results.md",
    log:
        "results/logs/table.log",
    shell:
        "{GANBENCH} table --input {input} --output {output} 2>&1 | tee {log}"
