"""Reconstruction: images in, face parameters and meshes out.

- ``reconstructor``: :class:`Reconstructor`, a checkpoint's encoder + multi-level model on crops.
- ``pipeline``: :class:`FacePipeline`, detect -> crop -> networks -> results in the photo's camera.
- ``runners``: ONNX Runtime or eager torch for the networks.
- ``fit``: the one per-image analysis-by-synthesis loop (E_total), used by ``refine`` and evaluation.
- ``refine``: ``--refine N`` on top of the encoder's answer.
- ``smoothing``, ``video``: temporal filtering and per-frame reconstruction of videos.
- ``outputs``: rendered layers, figures and the per-face export set.
- ``inverse_render``: the generic-mesh demo (pose and light from one image).
"""
