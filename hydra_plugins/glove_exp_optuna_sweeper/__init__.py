"""glove-exp's Optuna sweeper for Hydra (``hydra/sweeper=glove_exp_optuna``); its logic is in
``glove_exp.app.search``."""
