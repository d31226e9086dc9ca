"""Image features, computed in batches: colours, quality, faces, embeddings and social context
(``featurizer``, cached per snapshot by ``cache``), and the drift monitor's profile (``profile``, whose
feature names are in ``monitored`` so that the monitor reads them without torch or OpenCV)."""
