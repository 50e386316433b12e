"""Evaluation: XOR-TyDi R@kt, IR metrics, significance tests and reports."""
