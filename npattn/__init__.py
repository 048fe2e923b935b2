"""npattn: a small, exact reference engine for attention in convolutional networks.

Pure forward/backward pairs live in :mod:`npattn.ops`, the finite-difference checker in
:mod:`npattn.gradcheck`, backends in :mod:`npattn.backend`.
"""

__version__ = "0.1.0"
