"""The Amazon A2I worker task template of the review step (``steps/templates/review.liquid``).

A Liquid template with crowd HTML elements: the crop (through ``grant_read_access``, which presigns
the ``s3://`` URI; the bucket needs a CORS rule), the editable caption, and approve / edit / reject.
``create_human_task_ui`` accepts at most 128,000 characters (SageMaker API reference,
``UiTemplate.Content``).
"""

from __future__ import annotations

import re
from importlib import resources

from core.errors import InputError

TEMPLATE_MAX_CHARS = 128_000
TEMPLATE_NAME = "review.liquid"
# The fields the template reads from task.input; build_loop_input (steps/a2i_loops.py) must provide them.
TEMPLATE_INPUT_FIELDS = ("taskObject", "caption", "character", "itemId")
# The names of the answer fields it writes into answerContent.
TEMPLATE_ANSWER_FIELDS = ("approve", "edit", "reject", "caption", "reason")


def review_template() -> str:
    """The template text, checked: at most 128,000 characters, one ``crowd-form``, the expected fields.

    Raises:
        InputError: the packaged template is missing or breaks one of those rules.
    """
    try:
        text = resources.files("steps").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"steps/templates/{TEMPLATE_NAME} is missing from the installation "
                         f"(setup.py package_data must include templates/*.liquid)") from None
    check_template(text)
    return text


def check_template(text: str) -> None:
    """Raise :class:`InputError` when ``text`` cannot serve as the review task template."""
    if not text.strip():
        raise InputError("the A2I worker task template is empty")
    if len(text) > TEMPLATE_MAX_CHARS:
        raise InputError(f"the A2I worker task template has {len(text)} characters; create_human_task_ui accepts "
                         f"at most {TEMPLATE_MAX_CHARS}")
    if len(re.findall(r"<crowd-form[\s>]", text)) != 1:
        raise InputError("the A2I worker task template needs exactly one <crowd-form> element")
    missing = [f for f in TEMPLATE_INPUT_FIELDS if f"task.input.{f}" not in text]
    if missing:
        raise InputError(f"the A2I worker task template never reads task.input fields {missing}")
    if "grant_read_access" not in text:
        raise InputError("the A2I worker task template must show the image through grant_read_access")
    names = set(re.findall(r'name="([^"]+)"', text))
    absent = [f for f in TEMPLATE_ANSWER_FIELDS if f not in names]
    if absent:
        raise InputError(f"the A2I worker task template has no input named {absent}")
