"""Stand-in for Azure ML's ``azureml_user`` package, used only when the real one is not installed."""
