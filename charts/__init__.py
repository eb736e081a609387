"""cdk8s charts and the constants they share with the CDK stacks."""
