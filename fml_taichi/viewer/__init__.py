"""The GGUI viewer of corrective modes (``fml-taichi view``).

- ``modes``: principal modes (SVD) of the learned correctives, scaled by regressed faces.
- ``scene``: what is drawn (pose, levels, views) from a model and a state.
- ``ggui``: the Taichi GGUI window, interactive or headless.
- ``strips``: headless PNG strips of modes at -3..+3 sigma.
- ``demo_model``: a multi-level model with visible demo correctives, for a viewer without a checkpoint.
"""
