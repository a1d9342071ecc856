"""Local meanings of the Azure ML objects that scoring scripts use.

``azureml/`` and ``azureml_user/`` hold the stand-in packages that a worker appends to
``sys.path`` (last: the real Azure packages win when installed); they only re-export
what the modules of this package implement, so that batchinfer itself (the worker's
``mini_batch_context``) can use the same objects whichever ``azureml`` is installed.
"""
