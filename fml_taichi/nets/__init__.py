"""The networks and their files: the encoder, the parameter codec, the run config, checkpoints.

- ``encoder``: the CNN regressor and the codec between its output vector and :class:`FaceParams`.
- ``models``: the encoder + multi-level model pair a run trains (``build_networks``).
- ``config``: the YAML run config (validated dataclasses); checkpoints carry it.
- ``checkpoint``: the checkpoint file format (atomic save, validated load).
- ``shipping``: the float16 copy that ships inside the package.
"""
