"""Self-supervised training (paper Sec. 6-7): the two-stage loop and what feeds it.

- ``trainer``: the loop (stage 1 base level, stage 2 full E_total), checkpoints, resume, validation.
- ``objective``: which form of E_total each stage minimises.
- ``batches``: image pools and the sample order; ``distributed``: torchrun / DDP helpers.
- ``warm_start``: reflectance-corrective initialisation; ``validation``, ``logs``: measured progress.
"""
