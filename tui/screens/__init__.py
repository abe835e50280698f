"""One screen per part of the workflow: datasets, jobs, train, runs, recommend, help."""
