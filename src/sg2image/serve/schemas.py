"""Request and response models. The request models depend on the loaded model (its names, its
limits) and the server's settings, so they are made by :func:`request_models`; graphs inside a
request are typed ``Any`` for parsing and validated by :func:`sg2image.graph.parse_graphs`
(the same located messages as ``sg2image validate``), while the OpenAPI schema still describes
them exactly (names as enums, limits as bounds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from sg2image.graph import IMAGE_OBJECT, IN_IMAGE, Vocab
from sg2image.pipeline import LAYOUT_MODES, SCHEDULERS
from sg2image.serve.generation import SEED_SPACE
from sg2image.serve.settings import ServeSettings

MAX_GUIDANCE = 50.0


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**bounds: int):
    """An integer as JSON Schema means it: 2 and 2.0, never "2" or true (the request models are
    strict; this lets the float 2.0 through, as the schema promises). The bounds come before
    the validator, so that the schema states them as minimum / maximum."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


# ------------------------------------------------------------------------------ responses


class Problem(BaseModel):
    """One problem with a request, FastAPI's shape: ``loc`` is the path into the request
    (``["body", "graphs", 0, "relationships", 2]``), ``msg`` what is wrong there."""

    loc: list[str | int]
    msg: str
    type: str


class ProblemResponse(BaseModel):
    detail: list[Problem]


class MessageResponse(BaseModel):
    """Errors that concern the request as a whole (413, 415, 406, 503, ...)."""

    detail: str


class GeneratedImage(BaseModel):
    graph: int = Field(description="Index of the graph in the request.")
    seed: int = Field(description="This seed, that graph and num_images=1 give it again.")
    png: str = Field(description="The image, PNG, base64.")
    boxes: list[list[float]] | None = Field(
        description="The layout it was drawn from: one [x0, y0, x1, y1] in [0, 1] per object "
        "(null for a layout-free model)."
    )


class GenerateResponse(BaseModel):
    images: list[GeneratedImage]
    steps: int
    guidance: float
    sampler: str
    layout: Literal["predicted", "given"] | None = Field(
        description="Where the boxes came from; null for a layout-free model."
    )
    width: int
    height: int
    batch_size: int = Field(description="Images in the forward pass this request ran in.")
    seconds: float = Field(description="Time from arrival to answer, waiting included.")


class ValidateResponse(BaseModel):
    ok: bool
    num_graphs: int
    problems: list[str] = Field(description="Exactly what `sg2image validate` prints.")
    errors: list[Problem] = Field(description="The same problems, located in the body.")


class Limits(BaseModel):
    max_objects: int
    max_relationships: int
    max_steps: int
    max_images: int
    max_batch: int
    max_body_bytes: int
    max_guidance: float
    default_steps: int = Field(description="The full sampler's steps when none are sent.")
    default_guidance: float = Field(description="The full sampler's guidance when none is sent.")
    fast_steps: int | None = Field(
        description="The fast sampler's steps when none are sent (null: the model has none)."
    )
    fast_guidance: float | None = Field(description="The guidance built into the fast sampler.")
    finish_steps: int | None = Field(
        None, description="The finish sampler's steps (null: the model has no finish sampler)."
    )
    max_label_chars: int = Field(description="Longest label /api/draw draws.")
    max_draw_size: int = Field(description="Largest picture /api/draw makes, pixels.")
    max_image_side: int = Field(description="Largest height or width generate takes, pixels.")
    image_size_step: int = Field(description="Height and width are multiples of this.")


class VocabularyResponse(BaseModel):
    objects: list[str]
    predicates: list[str]
    samplers: list[str]
    default_sampler: str
    image_size: int
    has_layout: bool = Field(description="A layout model: its images are drawn from boxes.")
    layout_modes: list[str] = Field(description="The generate request's layout values.")
    depth_predicates: list[str] = Field(
        description="The predicates of depth order this model knows ('in front of', "
        "'behind'); empty when it has none. Its graphs' depth triples must not form a cycle."
    )
    limits: Limits


class Example(BaseModel):
    name: str
    graph: dict[str, Any]


class ExamplesResponse(BaseModel):
    examples: list[Example]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    has_layout: bool = Field(description="A layout model (boxes given or predicted).")
    waiting: int = Field(description="Requests in the queue.")
    running: int = Field(description="Images being generated now.")
    stats: dict[str, int]


# ------------------------------------------------------------------------------ requests


def scene_schema(
    objects: list[str] | None,
    predicates: list[str] | None,
    max_objects: int,
    max_rels: int,
    max_chars: int | None = None,
) -> dict:
    """JSON schema of one sg2im scene; names as enums when a vocabulary is given, else at most
    max_chars long (if given)."""
    name = {"type": "string", "minLength": 1}
    free = name if max_chars is None else {**name, "maxLength": max_chars}
    index = {"type": "integer", "minimum": 0, "maximum": max_objects - 1}
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "title": "SceneGraph",
        "properties": {
            "objects": {
                "type": "array",
                "items": {**name, "enum": objects} if objects else free,
                "minItems": 1,
                "maxItems": max_objects,
            },
            "relationships": {
                "type": "array",
                "description": "[subject index, predicate, object index]",
                "items": {
                    "type": "array",
                    "prefixItems": [
                        index,
                        {**name, "enum": predicates} if predicates else free,
                        index,
                    ],
                    "minItems": 3,
                    "maxItems": 3,
                },
                "maxItems": max_rels,
            },
            "boxes": {
                "type": ["array", "null"],  # null: none given, as the graph model takes it
                "description": "Optional, one per object: x0, y0, x1, y1 in [0, 1].",
                "items": {"type": "array", "prefixItems": [unit] * 4, "minItems": 4, "maxItems": 4},
            },
            "attributes": {
                "type": ["array", "null"],
                "items": {"type": "array", "items": name},
            },
        },
        "required": ["objects"],
        "additionalProperties": False,
    }


# Why a known mode is refused by a model that lacks it (else it would read "not allowed").
_REFUSED = {
    "given": "this model is layout-free: it draws without boxes, so it takes none; "
    "leave layout out",
    "predicted": "this model has no layout generator: send boxes with layout 'given'",
}


def layout_type(modes: tuple[str, ...]):
    """The request's ``layout``: one of the model's modes (the schema lists only those),
    strictly a string; a mode the model lacks is refused with the reason."""

    def check(value: str) -> str:
        if value in modes:
            return value
        if value in LAYOUT_MODES:
            raise PydanticCustomError("layout", _REFUSED[value])
        expected = " or ".join(repr(m) for m in modes)
        raise PydanticCustomError("literal_error", f"Input should be {expected}")

    schema = {
        "type": "string",
        "enum": list(modes),
        "description": "Layout models: 'predicted' samples the boxes from the graph, 'given' "
        "uses each graph's boxes. A layout-free model takes only 'predicted'.",
    }
    return Annotated[StrictStr, AfterValidator(check), WithJsonSchema(schema)]


@dataclass
class RequestModels:
    generate: type[BaseModel]
    draw: type[BaseModel]
    validate_schema: dict  # the /validate body: a graph document (any JSON is checked)


def request_models(
    vocab: Vocab,
    settings: ServeSettings,
    max_objects: int,
    layout_modes: tuple[str, ...] = ("predicted",),
    image_side: int = 64,
    size_step: int = 1,
    max_side: int = 128,
    samplers: Sequence[str] = tuple(SCHEDULERS),
    default_sampler: str | None = None,
    finish: tuple[int, str] | None = None,
) -> RequestModels:
    """The request bodies of this model and server. ``image_side``: the model's default
    (training) image side in pixels; ``size_step``: its VAE's downsampling factor, which
    every requested side must be a multiple of; ``max_side``: the largest side taken
    (``ServeSettings.largest_side``); ``samplers``: the ``sampler`` values taken ("fast"
    when the model has a distilled student, "finish" when it has that sampler, then the
    schedulers); ``default_sampler``: the few-step sampler ("fast" or "finish") that a
    request naming no sampler, steps or guidance gets, None: the full one; ``finish``: the
    finish sampler's steps and what it does (:meth:`SceneGraphPipeline.finish_text`), None
    when the model has none."""
    objects = [n for n in vocab.object_names if n != IMAGE_OBJECT]
    predicates = [n for n in vocab.predicate_names if n != IN_IMAGE]
    scene = scene_schema(objects, predicates, max_objects, settings.max_relationships)
    Scene = Annotated[Any, WithJsonSchema(scene)]
    Sampler = Literal[tuple(samplers)]  # type: ignore[valid-type]
    few = default_sampler
    few_text = {"fast": "the fast sampler's own (the model's distilled student)"}
    if finish is not None:
        few_text["finish"] = f"{finish[0]} (the finish sampler)"

    # strict: "steps": "20" or true is refused, not read as a number (a client that sends
    # strings for numbers has a bug worth hearing about); a float field still takes 2
    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

        graphs: list[Scene] = Field(
            min_length=1,
            max_length=settings.max_images,
            description="Scene graphs (sg2im JSON); each gives num_images images.",
        )
        steps: json_int(ge=1, le=settings.max_steps) | None = Field(
            None,
            description=(
                f"Omitted: {few_text[few]}, or {settings.default_steps} for the full one"
                if few
                else f"Omitted: {settings.default_steps}."
            ),
        )
        guidance: float | None = Field(
            None,
            ge=0,
            le=MAX_GUIDANCE,
            description="CFG scale of the full sampler (finish: of its guided step); <= 1: "
            f"off. Omitted: {settings.default_guidance:g}"
            + ("; the fast sampler takes none (its guidance is built in)." if "fast" in samplers
               else "."),  # fmt: skip
        )
        seed: json_int(ge=0, lt=SEED_SPACE) | None = Field(
            None, description="Image j of the request uses seed + j; omitted: a random seed."
        )
        sampler: Sampler | None = Field(
            None,
            description=(
                f"Omitted: '{few}' when steps and guidance are omitted too, else the model's "
                "own scheduler."
                if few
                else "Omitted: the model's own scheduler."
            )
            + (" 'fast': the model's distilled student." if "fast" in samplers else "")
            + (f" 'finish': {finish[1]}." if finish is not None else "")
            + " A scheduler name: the full model with it.",
        )
        num_images: json_int(ge=1, le=settings.max_images) = Field(1, description="Per graph.")
        layout: layout_type(layout_modes) = layout_modes[0]  # type: ignore[valid-type]
        height: json_int(ge=size_step, le=max_side, multiple_of=size_step) | None = Field(
            None, description=f"Pixels; omitted: {image_side}, the size the model was trained at."
        )
        width: json_int(ge=size_step, le=max_side, multiple_of=size_step) | None = Field(
            None, description=f"Pixels; omitted: {image_side}, the size the model was trained at."
        )

    class DrawRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        graph: Annotated[
            Any,
            WithJsonSchema(
                scene_schema(
                    None, None, max_objects, settings.max_relationships, settings.max_label_chars
                )
            ),
        ]
        size: json_int(ge=64, le=settings.max_draw_size) = Field(
            320, description="Picture width and height, pixels."
        )

    # /validate takes any JSON document and says what is wrong with it (200, ok false): the
    # graph forms are listed for readers, the empty schema admits the rest
    document = {
        "anyOf": [scene, {"type": "array", "items": scene, "minItems": 1}, {}],
        "description": "One scene or a list of scenes; any JSON is accepted and checked.",
    }
    return RequestModels(GenerateRequest, DrawRequest, document)
