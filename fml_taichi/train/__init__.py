"""Self-supervised training (paper Sec. 6-7): the encoder, the training loop, checkpoints.

Submodules: ``encoder`` (CNN regressor, pack/unpack of FaceParams), ``config`` (YAML config),
``checkpoint`` (file format), ``cached_dataset`` (preprocessed crop folders), ``trainer`` (the
two-stage loop), ``distributed`` (torch.distributed helpers), ``reconstructor`` (inference from a
checkpoint). Import the submodule you need; this package imports nothing heavy.
"""
