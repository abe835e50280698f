"""Reading online experiments: the statistics (stats), the report of an experiment's logs
(report), and a traffic simulator that replays held-out sessions against a server (simulate).
The server side (arms, assignment, logs) is engine.serve."""
