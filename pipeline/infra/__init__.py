"""The project's AWS infrastructure: the CloudFormation template (``template.yaml``) and the plain logic of
``storyboard deploy`` (:mod:`pipeline.infra.stack`), of reading the stack's outputs into the configuration
(:mod:`pipeline.infra.outputs`) and of ``storyboard images`` (:mod:`pipeline.infra.images`)."""
