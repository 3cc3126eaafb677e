"""Cost scripts: time and memory of DATE against plain sampling (``date_cost``) and of the edit controls
(``controls_cost``); their results are in benchmarks/results/."""
