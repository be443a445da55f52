# Paper outputs: the runs' training logs and a few samples per run gathered, then every table, statistic and figure
# rendered from results/ alone (`snakemake --cores 1 paper`; `snakemake --report report.html` shows them).


rule collect_training:
    input:
        [str(layout.StageFolder(run.run_dir).train_log) for run in PLAN.runs],
    output:
        layout.TRAINING_CSV,
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        layout.log("collect_training"),
    shell:
        "ganbench collect-training --output {output} {input} 2>&1 | tee {log}"


rule panels:
    input:
        unpack(lambda wildcards: {f"{kind}_{task}": path for task, files in PLAN.panel_inputs().items() for kind, path in files.items()}),
        encoder=layout.ENCODER,
        checkpoints=[str(layout.StageFolder(run.run_dir).checkpoint) for run in PLAN.panel_runs()],
        configs=[str(layout.StageFolder(run.run_dir).config) for run in PLAN.panel_runs()],
    output:
        layout.PANELS,
    params:
        settings=as_arg(PLAN.panels()),
        tasks=" ".join(f"--manifest {task}={files['manifest']} --dataset {task}={files['dataset']}" for task, files in PLAN.panel_inputs().items()),
        run_dirs=" ".join(run.run_dir for run in PLAN.panel_runs()),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
        gpu=GPUS_PER_JOB,
    log:
        layout.log("panels"),
    benchmark:
        layout.benchmark("panels", "all")
    shell:
        "ganbench --threads {threads} panels --settings {params.settings} {params.tasks} --encoder {input.encoder} "
        "--output {output} {params.run_dirs} 2>&1 | tee {log}"


rule paper:
    input:
        results=rules.collect.output[0],
        training=rules.collect_training.output[0],
        panels=rules.panels.output[0],
    output:
        report(
            directory(layout.PAPER),
            patterns=["{name}.html", "figures/{name}.png", "{name}.csv"],
            caption="report/paper.rst",
            category="Paper outputs",
        ),
    params:
        settings=as_arg(PLAN.paper()),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        layout.log("paper"),
    shell:
        "ganbench paper --settings {params.settings} --input-dir $(dirname {input.results}) --output-dir {output} "
        "2>&1 | tee {log}"
