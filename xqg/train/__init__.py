"""The two trainings on Ray Train: the bi-encoder (train_dr) and the query generator (train_qg)."""
