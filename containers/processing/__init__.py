"""Entry points of the processing image: ``python3 -m containers.processing.<step>``.

Each maps the SageMaker Processing layout (``/opt/ml/processing/input/<channel>``,
``/opt/ml/processing/output/<channel>``, container arguments) to a step function that knows nothing of
SageMaker. The root ``/opt/ml/processing`` can be moved with ``--processing-root`` or the environment
variable ``STORYBOARD_PROCESSING_ROOT``; the local runner sets it to ``runs/<execution-id>/<step>/``.
"""
