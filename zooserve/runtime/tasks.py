"""The one table of tasks: which pipeline serves each. Adding a task is one entry here (and a
member of ``zooserve.specs.Task``)."""

from __future__ import annotations

from collections.abc import Callable

from zooserve.runtime.bundle import Bundle
from zooserve.runtime.caption import CaptionPipeline
from zooserve.runtime.classify import ClassifyPipeline
from zooserve.runtime.pipeline import Pipeline
from zooserve.runtime.text import TextPipeline
from zooserve.specs import Task

PIPELINES: dict[Task, Callable[[Bundle], Pipeline]] = {
    Task.CLASSIFY: ClassifyPipeline,
    Task.CLASSIFY_TEXT: TextPipeline,
    Task.CAPTION: CaptionPipeline,
}


def make_pipeline(bundle: Bundle) -> Pipeline:
    return PIPELINES[bundle.manifest.task](bundle)
