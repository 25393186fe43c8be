"""The closed vocabularies of the transaction schema, in a module that imports nothing.

The contract validates against them and the model encodes them. Keeping them here rather than in
``functions.contract`` lets the model package (``functions.model``) load without the CloudEvents SDK, so a
serving runtime with another SDK (the KServe reference predictor pins SDK v1) can run the same model.
"""

CHANNELS = ("pos", "online", "atm")
