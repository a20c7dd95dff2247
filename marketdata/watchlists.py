"""Watchlists: ordered lists of symbols; services, selectors, ``watchlists`` topic.

A personal list belongs to its owner; a system list (no owner) is kept by staff in
the admin and clients may read and copy it but not change it. Every write goes
through a ``watchlist_*`` service here: it locks the list, audits the change,
advances the owner's stream (``watchlists.user.<user id>``, or ``watchlists.system``)
in the same transaction and, after commit, publishes the whole changed list there
(``{"id": ..., "deleted": true}`` for a deleted one). The REST views are in
:mod:`marketdata.watchlists_api`.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Prefetch, Q, QuerySet

from exchange.models import Symbol
from exchange.selectors import snapshot_transaction
from exchange.streams import (
    publish_on_commit,
    stream_advance,
    stream_current,
    stream_message,
)
from marketdata.models import Watchlist, WatchlistMember
from marketdata.news import MAX_SYMBOLS
from marketdata.topics import Snapshot, register, signed_in, unknown
from registry.services import RegistryError, User, audit_record

SYSTEM_TOPIC = "watchlists.system"


class WatchlistError(RegistryError):
    """A watchlist write that cannot be carried out; nothing was changed."""


def watchlist_topic(owner_id: int | None) -> str:
    return SYSTEM_TOPIC if owner_id is None else f"watchlists.user.{owner_id}"


# -- wire shape and selectors ---------------------------------------------------------


def watchlist_to_wire(watchlist: Watchlist) -> dict[str, Any]:
    """The one JSON shape of a list (REST and stream); members prefetched."""
    return {
        "id": watchlist.pk,
        "name": watchlist.name,
        "is_system": watchlist.is_system,
        "symbols": [member.symbol.identifier for member in watchlist.members.all()],
        "updated_at": watchlist.updated_at.isoformat(),
    }


def watchlists_loaded() -> QuerySet[Watchlist]:
    members = WatchlistMember.objects.select_related("symbol__market").order_by(
        "position"
    )
    return Watchlist.objects.prefetch_related(Prefetch("members", queryset=members))


def watchlists_visible(*, user: User) -> QuerySet[Watchlist]:
    """The user's own lists and the system lists, by name."""
    owner_id = getattr(user, "pk", None)
    return watchlists_loaded().filter(Q(owner_id=owner_id) | Q(owner__isnull=True))


def watchlist_symbols(watchlist: Watchlist) -> list[Symbol]:
    """The list's symbols in order (markets loaded), read from the database."""
    members = watchlist.members.select_related("symbol__market").order_by("position")
    return [member.symbol for member in members]


def _identifiers(symbols: Iterable[Symbol]) -> list[str]:
    return [symbol.identifier for symbol in symbols]


# -- services -------------------------------------------------------------------------


def _check_name(*, owner_id: int | None, name: str, exclude_pk: int | None) -> None:
    if not name.strip():
        raise WatchlistError("A watchlist needs a name.", code="blank", field="name")
    taken = Watchlist.objects.filter(owner_id=owner_id, name=name)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise _duplicate_name(name)


def _duplicate_name(name: str) -> WatchlistError:
    return WatchlistError(
        f"There is already a watchlist named {name!r}.",
        code="duplicate_name",
        field="name",
        status=409,
    )


def _check_symbols(symbols: Sequence[Symbol], field: str) -> None:
    if len(symbols) > MAX_SYMBOLS:
        raise WatchlistError(
            f"A watchlist holds at most {MAX_SYMBOLS} symbols.",
            code="too_many_symbols",
            field=field,
        )
    seen: set[int] = set()
    for symbol in symbols:
        if symbol.pk in seen:
            raise WatchlistError(
                f"{symbol.identifier} is already in the watchlist.",
                code="duplicate_symbol",
                field=field,
            )
        seen.add(symbol.pk)


def _save(watchlist: Watchlist) -> None:
    try:
        watchlist.save()
    except IntegrityError as error:  # a concurrent list took the name
        raise _duplicate_name(watchlist.name) from error


def _members_set(watchlist: Watchlist, symbols: Sequence[Symbol]) -> None:
    watchlist.members.all().delete()
    WatchlistMember.objects.bulk_create(
        WatchlistMember(watchlist=watchlist, symbol=symbol, position=position)
        for position, symbol in enumerate(symbols)
    )


def _publish(watchlist: Watchlist) -> Watchlist:
    """Advance the list's stream and send the list after commit; return it loaded.
    Inside the transaction that changed it."""
    loaded = watchlists_loaded().get(pk=watchlist.pk)
    topic = watchlist_topic(loaded.owner_id)
    seq = stream_advance({topic: 1})[topic]
    publish_on_commit([stream_message(topic, seq, watchlist_to_wire(loaded))])
    return loaded


def _create(
    *,
    owner: AbstractBaseUser | None,
    name: str,
    symbols: Sequence[Symbol],
    acting_user: User,
    action_name: str,
    changes: dict[str, Any],
) -> Watchlist:
    owner_id = owner.pk if owner is not None else None
    _check_symbols(symbols, "symbols")
    with transaction.atomic():
        _check_name(owner_id=owner_id, name=name, exclude_pk=None)
        watchlist = Watchlist(owner_id=owner_id, name=name)
        _save(watchlist)
        _members_set(watchlist, symbols)
        audit_record(
            actor=acting_user,
            action=action_name,
            target=watchlist,
            changes={"name": name, "symbols": _identifiers(symbols), **changes},
        )
        return _publish(watchlist)


def watchlist_create(
    *,
    owner: AbstractBaseUser | None,
    name: str,
    symbols: Sequence[Symbol] = (),
    acting_user: User,
) -> Watchlist:
    """Create ``owner``'s list (a system list if ``owner`` is None).

    Raises :class:`WatchlistError`: ``duplicate_name`` (409) if the owner already
    has a list of that name, ``duplicate_symbol`` or ``too_many_symbols``.
    """
    return _create(
        owner=owner,
        name=name,
        symbols=list(symbols),
        acting_user=acting_user,
        action_name="watchlist_create",
        changes={},
    )


def watchlist_copy(
    *, source: Watchlist, owner: AbstractBaseUser, name: str, acting_user: User
) -> Watchlist:
    """A new personal list of ``owner`` with ``source``'s symbols (as now), audited
    as ``watchlist_copy``. Raises as :func:`watchlist_create`."""
    return _create(
        owner=owner,
        name=name,
        symbols=watchlist_symbols(source),
        acting_user=acting_user,
        action_name="watchlist_copy",
        changes={"source": source.pk},
    )


def _change(
    watchlist: Watchlist,
    *,
    acting_user: User,
    action_name: str,
    name: str | None = None,
    symbols: Sequence[Symbol] | None = None,
    field: str = "symbols",
) -> Watchlist:
    """Rename and/or replace the members of a list locked by the caller."""
    changes: dict[str, Any] = {}
    if name is not None and name != watchlist.name:
        _check_name(owner_id=watchlist.owner_id, name=name, exclude_pk=watchlist.pk)
        changes["name"] = [watchlist.name, name]
        watchlist.name = name
    if symbols is not None:
        _check_symbols(symbols, field)
        old, new = _identifiers(watchlist_symbols(watchlist)), _identifiers(symbols)
        if old != new:
            changes["symbols"] = [old, new]
            _members_set(watchlist, symbols)
    if not changes:
        return watchlists_loaded().get(pk=watchlist.pk)
    _save(watchlist)  # also stamps updated_at
    audit_record(
        actor=acting_user, action=action_name, target=watchlist, changes=changes
    )
    return _publish(watchlist)


def _locked(watchlist: Watchlist) -> Watchlist:
    return Watchlist.objects.select_for_update().get(pk=watchlist.pk)


def watchlist_update(
    *,
    watchlist: Watchlist,
    acting_user: User,
    name: str | None = None,
    symbols: Sequence[Symbol] | None = None,
) -> Watchlist:
    """Rename the list and/or replace its ordered symbols (reorder, add and remove
    in one go). Nothing changed: nothing audited or published. Raises as
    :func:`watchlist_create`."""
    with transaction.atomic():
        return _change(
            _locked(watchlist),
            acting_user=acting_user,
            action_name="watchlist_change",
            name=name,
            symbols=None if symbols is None else list(symbols),
        )


def watchlist_symbol_add(
    *,
    watchlist: Watchlist,
    symbol: Symbol,
    acting_user: User,
    position: int | None = None,
) -> Watchlist:
    """Insert ``symbol`` at ``position`` (0 = first; None or past the end: last).
    Raises ``duplicate_symbol`` if it is already in the list."""
    with transaction.atomic():
        watchlist = _locked(watchlist)
        symbols = watchlist_symbols(watchlist)
        symbols.insert(len(symbols) if position is None else position, symbol)
        return _change(
            watchlist,
            acting_user=acting_user,
            action_name="watchlist_symbol_add",
            symbols=symbols,
            field="symbol",
        )


def watchlist_symbol_remove(
    *, watchlist: Watchlist, symbol: Symbol, acting_user: User
) -> Watchlist:
    """Take ``symbol`` out of the list. Raises ``not_in_watchlist`` (404)."""
    with transaction.atomic():
        watchlist = _locked(watchlist)
        symbols = watchlist_symbols(watchlist)
        if symbol not in symbols:
            raise WatchlistError(
                f"{symbol.identifier} is not in the watchlist.",
                code="not_in_watchlist",
                field="symbol",
                status=404,
            )
        symbols.remove(symbol)
        return _change(
            watchlist,
            acting_user=acting_user,
            action_name="watchlist_symbol_remove",
            symbols=symbols,
        )


def watchlist_delete(*, watchlist: Watchlist, acting_user: User) -> None:
    """Delete the list, audited; publishes ``{"id": .., "deleted": true}``."""
    with transaction.atomic():
        watchlist = _locked(watchlist)
        audit_record(
            actor=acting_user,
            action="watchlist_delete",
            target=watchlist,
            changes={
                "name": watchlist.name,
                "symbols": _identifiers(watchlist_symbols(watchlist)),
            },
        )
        pk, topic = watchlist.pk, watchlist_topic(watchlist.owner_id)
        watchlist.delete()
        seq = stream_advance({topic: 1})[topic]
        publish_on_commit([stream_message(topic, seq, {"id": pk, "deleted": True})])


# -- stream topic ---------------------------------------------------------------------


class WatchlistsTopic:
    """``watchlists`` (signed in): the user's and the system lists, then each
    changed list. Upstreams ``watchlists.user.<id>`` and ``watchlists.system``."""

    def upstreams(self, user: Any, argument: str) -> list[str]:
        if argument:
            raise unknown(f"watchlists.{argument}")
        signed_in(user, "watchlists")
        return [watchlist_topic(user.pk), SYSTEM_TOPIC]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        with snapshot_transaction():
            current = stream_current(upstreams)
            data = [watchlist_to_wire(w) for w in watchlists_visible(user=user)]
        seqs = {topic.rsplit(".", 1)[1]: seq for topic, seq in current.items()}
        return Snapshot(seqs=seqs, data=data)


register("watchlists", WatchlistsTopic())
