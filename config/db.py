"""Database helpers the ORM lacks."""

from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def bulk_update_rows(
    model: type[models.Model], objects: Sequence[models.Model], fields: Sequence[str]
) -> None:
    """Write ``fields`` of many rows in one ``UPDATE ... FROM (VALUES ...)``.

    Django's ``bulk_update`` builds a ``CASE`` per field and row, which costs
    milliseconds of Python per row; this builds one small statement. Values go
    through each field's ``get_db_prep_save``, so they are stored exactly as
    ``save()`` would store them. Caller holds whatever row locks it needs.
    """
    if not objects:
        return
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    columns = [pk, *(_column_field(model, name) for name in fields)]
    quote = connection.ops.quote_name
    cells = [f"CAST(%s AS {field.db_type(connection)})" for field in columns]
    row = "(" + ", ".join(cells) + ")"
    params: list[Any] = []
    for obj in objects:
        for field in columns:
            params.append(
                field.get_db_prep_save(getattr(obj, field.attname), connection)
            )
    table = quote(meta.db_table)
    assignments = ", ".join(
        f"{quote(_column(field))} = v.column{index}"
        for index, field in enumerate(columns[1:], start=2)
    )
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608 (identifiers, not input)
        f"FROM (VALUES {', '.join([row] * len(objects))}) AS v "
        f"WHERE {table}.{quote(_column(pk))} = v.column1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _column_field(model: type[models.Model], name: str) -> "models.Field[Any, Any]":
    """``model``'s field ``name``, which must be a column of its table (not a
    reverse relation, a generic foreign key or a many-to-many)."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete or field.many_to_many:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field


def _column(field: "models.Field[Any, Any]") -> str:
    if field.column is None:  # only fields without a column of their own
        raise ValueError(f"{field} has no column")
    return field.column
