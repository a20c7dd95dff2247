"""Database helpers the ORM lacks."""

from collections.abc import Sequence

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
    columns = [pk, *(meta.get_field(name) for name in fields)]
    quote = connection.ops.quote_name
    cells = [f"CAST(%s AS {field.db_type(connection)})" for field in columns]
    row = "(" + ", ".join(cells) + ")"
    params: list[object] = []
    for obj in objects:
        for field in columns:
            params.append(
                field.get_db_prep_save(getattr(obj, field.attname), connection)
            )
    table = quote(meta.db_table)
    assignments = ", ".join(
        f"{quote(field.column)} = v.column{index}"  # type: ignore[union-attr]
        for index, field in enumerate(columns[1:], start=2)
    )
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608 (identifiers, not input)
        f"FROM (VALUES {', '.join([row] * len(objects))}) AS v "
        f"WHERE {table}.{quote(pk.column)} = v.column1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
