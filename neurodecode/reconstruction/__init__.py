"""Reconstruction: brain embedding -> teacher image embedding (the prior) -> image (a generator).

Stage 1 (:mod:`~neurodecode.reconstruction.prior`) maps an encoder's brain embedding to the
teacher's image embedding; stage 2 (:mod:`~neurodecode.reconstruction.generators`) draws images from
image embeddings. :mod:`~neurodecode.reconstruction.pipeline` chains them for ``neurodecode
reconstruct``. Heavy libraries (diffusers) are imported inside the functions that need them.
"""
