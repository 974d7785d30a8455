"""The names the pipeline's steps are built from, shared by the step builders, the local runner, the containers'
tests and the command line: step names, processing channels and container paths, the JSON paths of
``evaluation.json`` the gate reads, the callback and Lambda outputs, and the entry point each step runs.
"""

from __future__ import annotations

# Step names (the Studio graph shows the display names).
EXTRACT = "ExtractFrames"
CAPTION = "CaptionImages"
REVIEW = "HumanReview"
FINETUNE = "FineTune"
EVALUATE = "Evaluate"
CHECK_TRAINED = "CheckModelTrained"
CHECK_QUALITY = "CheckQuality"
REGISTER = "RegisterModel"
FAIL_NOT_TRAINED = "ModelNotTrained"
FAIL_QUALITY = "QualityGateFailed"

# The Bedrock backend's evaluation throughput steps (pipeline.evaluation_throughput_steps): the Task names the
# consumer dispatches on, and the step names.
PROVISION_EVAL = "ProvisionEvaluationModel"
RELEASE_EVAL = "ReleaseEvaluationModel"

# Processing channels (ProcessingInput / ProcessingOutput names) and container paths.
PROCESSING_ROOT = "/opt/ml/processing"
EXTRACT_OUTPUT = "extract"
DATASET_OUTPUT = "dataset"
EVALUATION_OUTPUT = "evaluation"
EVALUATION_PROPERTY_FILE = "EvaluationReport"
EVALUATION_FILE = "evaluation.json"

# JSON paths in evaluation.json (the evaluation step writes them; tests check both). CheckQuality reads only the
# gate's status and QualityGateFailed only its summary sentence: both are always strings, whereas a figure may be
# null (no base images, no training crops) and a JsonGet of null fails the step instead of taking the else branch.
GATE_STATUS_PATH = "gate.status"
GATE_SUMMARY_PATH = "gate.summary"
GATE_PASSED = "passed"
# Read by RegisterModel, which runs only when the gate passed, that is when every figure was measured.
SIMILARITY_PATH = "metrics.character_similarity.finetuned.mean"
IMPROVEMENT_PATH = "metrics.character_similarity.improvement"

# Callback tasks and output parameters (the SQS consumer and the local handlers dispatch on "Task").
REVIEW_OUTPUTS = ("ReviewedManifestUri", "ApprovedCount", "EditedCount", "RejectedCount")
FINETUNE_OUTPUTS = ("JobArn", "CustomModelArn", "DryRun")

# The LoRA training job (finetune.backend: sagemaker).
TRAINING_ENTRYPOINT = ["python3", "-m", "containers.training.train_lora"]
TRAINING_CHANNELS = ("train", "review", "base_model")
LOSS_METRIC = {"Name": "train:loss", "Regex": r"loss=([0-9.eE+-]+)"}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
REGISTER_OUTPUTS = ("ModelPackageArn", "Registered", "Reason")

ENTRYPOINT_MODULES = {
    EXTRACT: "containers.processing.extract_frames",
    CAPTION: "containers.processing.caption_images",
    EVALUATE: "containers.processing.evaluate",
}
