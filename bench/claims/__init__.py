"""The jobs of ``python -m bench.paper_claims`` (:mod:`bench.paper_claims` is the command line):

- :mod:`~bench.claims.plan`: the profiles, the recipe of every arm and the list of training runs;
- :mod:`~bench.claims.evaluation`: scoring a trained model, and part 3's held-out classes
  (also used by ``bench.heldout_rescore``);
- :mod:`~bench.claims.training`: running the training runs (in parallel processes);
- :mod:`~bench.claims.aggregate`: the parts' results from the runs' (mean +- std over seeds);
- :mod:`~bench.claims.charts` and :mod:`~bench.claims.tables`: the figures and the Markdown tables.
"""
