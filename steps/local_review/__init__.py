"""The offline human review: local human loops (A2I's file formats) and the review page that answers them.

- :mod:`steps.local_review.loops`: :class:`LocalHumanLoops`, loops kept in a folder;
- :mod:`steps.local_review.page`: the Flask application (templates in ``steps/templates/review/``);
- :mod:`steps.local_review.server`: :func:`serve_local_review`, which serves it on 127.0.0.1 until every
  record is answered.
"""

from steps.local_review.loops import LocalHumanLoops
from steps.local_review.page import SHORTCUTS, ReviewQueue, create_review_app, reference_images
from steps.local_review.server import serve_local_review

__all__ = ["SHORTCUTS", "LocalHumanLoops", "ReviewQueue", "create_review_app", "reference_images",
           "serve_local_review"]
