"""loaded_instance: a cached row becomes an instance with no change recorded."""

from __future__ import annotations

from sqlalchemy import String, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, reconstructor

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


class Sheet(_Base):
    __tablename__ = "loaded_instance_sheets"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))

    def __init__(self, **values: object) -> None:
        super().__init__(**values)
        self.rendered: str | None = None

    @reconstructor
    def _on_load(self) -> None:
        self.rendered = None


def test_reconstructors_run_as_for_a_row_the_orm_loads() -> None:
    """A model's @reconstructor (its ``load`` event) runs, as a query or merge() runs it.

    Models set their non-column attributes there; without it a cached row lacks them.
    """
    sheet = loaded_instance(Sheet, {"id": 1, "title": "hi"})
    assert sheet.rendered is None
