"""The SageMaker Pipeline definition, configuration, command line and local runner of storyboard."""
