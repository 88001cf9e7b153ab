"""The worker side: everything that runs in the same process as candidate code.

Nothing here decides a score. A worker builds the candidate's model, trains it with the
evaluator's loop (training worker) or loads the trained state into a freshly built model (scoring
worker), and answers the judge's forward requests with logits. Everything in these modules can be
rewritten by the candidate at run time; the judge (:mod:`benchmark.judge`) trusts none of it.
"""
