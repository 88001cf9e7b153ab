"""The judge: everything that decides a result, in processes that never import a candidate.

launch      starting, watching (wall clock, memory, heartbeats) and stopping worker processes
options     Options: what one evaluation is asked for, built once and passed down
runner      evaluate_file: static checks (a courtesy), the results cache, the run folder
evaluation  one evaluation: the training worker, the verdicts, the scoring worker, the result
conversation  spawning, starting and talking to its workers (expect, forward)
scoring     loss, accuracy and log-probabilities from the logits a worker hands over
probes      secret probe inputs and the comparisons of their outputs
budget      parameter, structure, FLOP and CPU-time verdicts
static_checks  the AST courtesy check
"""
