"""loaded_instance: a cached row becomes an instance with no change recorded."""

from __future__ import annotations

from sqlalchemy import String, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import loaded_instance


class _Base(DeclarativeBase):
    pass


class Note(_Base):
    __tablename__ = "loaded_instance_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


def test_values_are_loaded_state_with_no_history() -> None:
    """Attributes read back as given and none counts as changed, unlike the constructor's."""
    note = loaded_instance(Note, {"id": 3, "title": "hi"})
    state = inspect(note)
    assert (note.id, note.title) == (3, "hi")
    assert state.transient
    assert not state.attrs.title.history.has_changes()
    assert Note(id=3, title="hi") is not note
    assert inspect(Note(id=3, title="hi")).attrs.title.history.has_changes()


def test_a_change_after_loading_is_tracked() -> None:
    """Setting an attribute afterwards is recorded against the loaded value."""
    note = loaded_instance(Note, {"id": 3, "title": "hi"})
    note.title = "bye"
    history = inspect(note).attrs.title.history
    assert history.added == ["bye"]
    assert history.deleted == ["hi"]
