"""Response shapes, defined once: a ``TypedDict`` is both what the code that builds a response
must return (mypy checks every key and value against it) and, through pydantic's JSON Schema
and the drf-spectacular extension below, what the OpenAPI schema says that response is.

A shape costs nothing at run time: responses stay plain dicts built by one render function
each (``rfq.render``, ``kernel.api.error_body``). The schema is generated from the same classes
with ``additionalProperties: false``, so a field a render function adds without declaring it
makes Schemathesis' response check fail, and mypy refuses it before that.

The scalar aliases below say how a value travels: decimals and UUIDs are strings, times are
UTC ISO 8601 strings. Enumerations come from the models' choices:
``RfqState = Annotated[str, WithJsonSchema(choices_schema(Rfq.State))]``.
"""

from typing import Annotated, Any, get_args

from django.db.models import Choices
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent, resolve_type_hint
from pydantic import TypeAdapter, WithJsonSchema
from typing_extensions import get_type_hints, is_typeddict

# A decimal as the API writes and reads it (``rfq.serializers.DECIMAL_PATTERN``).
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
DecimalStr = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN, "example": "1.5"}
    ),
]
Timestamp = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "format": "date-time", "example": "2026-12-03T09:30:00.000Z"}
    ),
]
Uuid = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]


def choices_schema(choices: type[Choices]) -> dict[str, Any]:
    """The schema of a string that is one of the model ``choices``: the one drf-spectacular
    gives a serializer's choice field for them, so requests and responses share one named
    enumeration (``SideEnum``, ``RfqStateEnum``, ...)."""
    schema: dict[str, Any] = resolve_type_hint(choices)  # type: ignore[no-untyped-call]
    return schema


def _closed(schema: Any) -> Any:
    """Every object of the schema refuses undeclared properties: a response carries exactly
    what its shape declares."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for item in schema:
            _closed(item)
    return schema


def shape_schema(shape: type) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The JSON Schema (2020-12, as OpenAPI 3.1 uses) of a shape, and the schemas of the shapes
    it refers to, by name, to go into ``components/schemas``."""
    schema = TypeAdapter(shape).json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    definitions = schema.pop("$defs", {})
    return _closed(schema), {name: _closed(sub) for name, sub in definitions.items()}


# TYPEHINT NOTE: drf-spectacular ships no type information; its extension base class and
# ResolvedComponent are untyped, hence the two ignores.
class TypedDictShapeExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """Lets ``@extend_schema(responses=...)`` take a shape (a ``TypedDict``) where it takes a
    serializer: the component is named after the class, nested shapes become components too."""

    target_class = dict
    match_subclasses = True

    @classmethod
    def _matches(cls, target: Any) -> bool:
        return is_typeddict(target)

    def get_name(self, auto_schema: Any, direction: str) -> str:
        name: str = self.target.__name__
        return name

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema, definitions = shape_schema(self.target)
        shapes = _nested_shapes(self.target)
        for name, sub_schema in definitions.items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(  # type: ignore[no-untyped-call]
                    name=name,
                    type=ResolvedComponent.SCHEMA,
                    # The class, as when the shape is a response itself: one identity per name.
                    object=shapes.get(name, name),
                    schema=sub_schema,
                )
            )
        return schema


def _nested_shapes(shape: type, found: dict[str, type] | None = None) -> dict[str, type]:
    """Every shape ``shape`` refers to (through lists, unions and ``Annotated``), by name."""
    found = {} if found is None else found
    pending: list[Any] = list(get_type_hints(shape, include_extras=True).values())
    while pending:
        hint = pending.pop()
        if is_typeddict(hint):
            if hint.__name__ not in found:
                found[hint.__name__] = hint
                _nested_shapes(hint, found)
        else:
            pending.extend(get_args(hint))
    return found
