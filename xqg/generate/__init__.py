"""Query generation: n sampled queries per passage per language, behind swappable backends."""
