if SEED_BATCHING == "separate":

    rule evaluate:
        input:
            unpack(evaluate_inputs),
            checkpoint=layout.RUN / layout.StageFolder.CHECKPOINT,
            config=layout.RUN / layout.StageFolder.CONFIG,
        output:
            layout.RUN / layout.StageFolder.METRICS,
        params:
            settings=as_arg(PLAN.evaluate()),
            # The run's own settings too: a changed adaptation setting must also invalidate an existing metrics.json,
            # even when the run folder's checkpoint is gone (Snakemake does not rerun a missing intermediate file).
            run_settings=lambda w: as_arg(PLAN.adapt(run_of(w))),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=15,
            gpu=GPUS_PER_JOB,
        log:
            layout.log("evaluate", layout.RUN_KEY),
        benchmark:
            layout.benchmark("evaluate", layout.RUN_KEY)
        shell:
            "ganbench --threads {threads} evaluate --settings {params.settings} --run-dir $(dirname {input.checkpoint}) "
            "--manifest {input.manifest} --dataset {input.dataset} --encoder {input.encoder} --output {output} 2>&1 | tee {log}"

else:

    rule evaluate_seeds:
        input:
            unpack(evaluate_inputs),
            checkpoints=expand(layout.RUN / layout.StageFolder.CHECKPOINT, seed=config["seeds"], allow_missing=True),
            configs=expand(layout.RUN / layout.StageFolder.CONFIG, seed=config["seeds"], allow_missing=True),
        output:
            expand(layout.RUN / layout.StageFolder.METRICS, seed=config["seeds"], allow_missing=True),
        params:
            settings=as_arg(PLAN.evaluate()),
            run_settings=lambda w: shlex.quote(PLAN.adapt_group_json(w.task, int(w.shots), w.method, int(w.draw))),
            runs=lambda w, input, output: " ".join(
                f"--run-dir $(dirname {checkpoint}) --output {metrics}" for checkpoint, metrics in zip(input.checkpoints, output)
            ),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=lambda w: 15 * len(config["seeds"]),
            gpu=GPUS_PER_JOB,
        log:
            layout.log("evaluate_seeds", layout.RUN_GROUP_KEY),
        benchmark:
            layout.benchmark("evaluate_seeds", layout.RUN_GROUP_KEY)
        shell:
            "ganbench --threads {threads} evaluate --settings {params.settings} {params.runs} "
            "--manifest {input.manifest} --dataset {input.dataset} --encoder {input.encoder} 2>&1 | tee {log}"


rule collect:
    input:
        [str(layout.StageFolder(run.run_dir).metrics) for run in PLAN.runs],
    output:
        layout.RESULTS_CSV,
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        layout.log("collect"),
    shell:
        "ganbench collect --output {output} {input} 2>&1 | tee {log}"


rule table:
    input:
        rules.collect.output[0],
    output:
        layout.RESULTS_TABLE,
    params:
        oracle="--oracle-draws" if config["sweep"]["oracle"] else "",
        settings=as_arg(PLAN.paper()),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        layout.log("table"),
    shell:
        "ganbench table --settings {params.settings} --input {input} --output {output} {params.oracle} 2>&1 | tee {log}"
