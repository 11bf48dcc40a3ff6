"""glove-exp's default launcher for Hydra (``hydra/launcher=glove_exp``); its logic is in
``glove_exp.app.launch``."""
