"""Entry point of the training image: ``python3 -m containers.training.train_lora`` (the LoRA fine-tune).

It maps SageMaker's training layout (``/opt/ml/input/config/hyperparameters.json``,
``/opt/ml/input/data/<channel>/``, ``/opt/ml/model``, ``/opt/ml/checkpoints``, ``/opt/ml/output/failure``)
to :func:`steps.lora.run_lora_training`. The root ``/opt/ml`` moves with the environment variable
``STORYBOARD_OPT_ML`` (the local runner sets it to a run folder).
"""
