rule evaluate:
    input:
        unpack(evaluate_inputs),
        checkpoint=rules.adapt.output.checkpoint,
        config=rules.adapt.output.config,
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
    log:
        layout.log("evaluate", layout.RUN_KEY),
    benchmark:
        layout.benchmark("evaluate", layout.RUN_KEY)
    shell:
        "ganbench --threads {threads} evaluate --settings {params.settings} --run-dir $(dirname {input.checkpoint}) "
        "--manifest {input.manifest} --dataset {input.dataset} --encoder {input.encoder} --output {output} 2>&1 | tee {log}"


rule collect:
    input:
        [str(layout.StageFolder(run.run_dir).metrics) for run in PLAN.runs],
    output:
        layout.RESULTS_CSV,
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
    log:
        layout.log("table"),
    shell:
        "ganbench table --input {input} --output {output} {params.oracle} 2>&1 | tee {log}"
