"""CDK stacks of the serving system: network -> cluster -> GCS store -> serving."""
