"""Advice: how well each frozen checkpoint suits a data set (`transferability`: LogME, linear probe, k-NN, BatchNorm
shift), which strategy to run from those measurements (`rules`), and the advisor that measures, ranks and
explains (`advise`).

May import the leaves and every subpackage up to `pipeline` (it prepares data exactly as a recipe would).
"""
