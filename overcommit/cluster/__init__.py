"""Orchestration: the scenario timeline, placement, runtimes that drive the models, checkers.

`engine.run_scenario` is the driver; `runtime` executes host windows (inline in this process);
`placement` places guests; `checkers` decides validity from what the stores really hold.
"""
