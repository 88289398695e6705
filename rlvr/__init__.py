"""rlvr: reinforcement learning from verifiable rewards, with pass@k against the base model.

Layers, lowest first. A module imports its own layer and the layers below it, never one above,
and nothing forms a cycle (tests/test_layering.py; `python bench/import_graph.py --edges` prints
the graph):

1. core (`rlvr.*`): problems and data (`tasks`, `templates`, `data`), verifiers (`rewards/`,
   `sandbox`, `jail`, `judge`, `workers`), models and sampling (`models`, `tiny`, `rollout`,
   `batch`), loss and advantage primitives (`losses`, `advantages`), `errors`. No config object
   reaches here: each takes its own section (`DataConfig`, `RewardConfig`) or plain arguments.
2. `rlvr.algorithms`: the algorithms, on core only. A new one is one file (`Algorithm` hooks).
3. `rlvr.eval`: pass@k, the metrics, plots, and `evaluate`, on core only (not on algorithms):
   it scores samples, whoever trained the model.
4. `rlvr.config`: the run config; it validates the `algorithm:` section with the algorithm's own
   Config and the `eval:` section with the eval's settings.
5. `rlvr.trainer`: the training loop; it calls the algorithm's hooks and `rlvr.eval.evaluate`.
6. `rlvr.sweep`, `rlvr.cli`: the commands.
"""

__version__ = "0.1.0"
