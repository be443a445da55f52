"""Paper outputs: tables (Markdown, LaTeX, CSV), statistics across tasks, power, and figures, rendered from stored
results alone (the results CSV, the gathered training logs and sample panels), never by training or scoring.

`inputs` reads a results folder (a run's `results/` or the committed `reports/reference/`); `tables`,
`aggregate`, `power` and `figures` each compute one kind of output; `render` writes them all (the `paper` stage).
"""
