"""Services on svcs: registration, request scopes with cleanup, and test overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import svcs

from corestone.container import Services


class Clock:
    """A service type for the tests."""

    def __init__(self, name: str = "real") -> None:
        self.name = name


class Mailer:
    """A service that depends on Clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock


async def test_register_value_serves_the_same_object_everywhere() -> None:
    """A registered value is what every scope gets."""
    services = Services()
    clock = Clock()
    services.register_value(Clock, clock)

    async with services.scope() as first, services.scope() as second:
        assert await first.aget(Clock) is clock
        assert await second.aget(Clock) is clock


async def test_register_factory_builds_once_per_scope() -> None:
    """A factory runs once per scope; each scope has its own instance."""
    services = Services()
    built: list[Clock] = []

    def make() -> Clock:
        built.append(Clock())
        return built[-1]

    services.register_factory(Clock, make)

    async with services.scope() as first:
        assert await first.aget(Clock) is await first.aget(Clock)
    async with services.scope() as second:
        await second.aget(Clock)

    assert len(built) == 2


async def test_a_factory_taking_the_container_can_ask_for_other_services() -> None:
    """A factory with an svcs_container argument resolves its own dependencies."""
    services = Services()
    services.register_value(Clock, Clock("injected"))

    def make_mailer(svcs_container: svcs.Container) -> Mailer:
        return Mailer(svcs_container.get(Clock))

    services.register_factory(Mailer, make_mailer)

    async with services.scope() as scope:
        mailer = await scope.aget(Mailer)

    assert mailer.clock.name == "injected"


async def test_generator_factory_cleanup_runs_when_the_scope_closes() -> None:
    """Code after yield in a factory runs when the scope ends, not before."""
    services = Services()
    events: list[str] = []

    def make() -> Iterator[Clock]:
        events.append("open")
        yield Clock()
        events.append("close")

    services.register_factory(Clock, make)

    async with services.scope() as scope:
        await scope.aget(Clock)
        assert events == ["open"]

    assert events == ["open", "close"]


async def test_async_generator_factory_cleanup_runs_when_the_scope_closes() -> None:
    """Async generator factories, including dependent ones, are cleaned up too."""
    services = Services()
    events: list[str] = []

    async def make_clock() -> AsyncIterator[Clock]:
        events.append("clock open")
        yield Clock()
        events.append("clock close")

    async def make_mailer(svcs_container: svcs.Container) -> AsyncIterator[Mailer]:
        clock = await svcs_container.aget(Clock)
        events.append("mailer open")
        yield Mailer(clock)
        events.append("mailer close")

    services.register_factory(Clock, make_clock)
    services.register_factory(Mailer, make_mailer)

    async with services.scope() as scope:
        await scope.aget(Mailer)

    assert events[:2] == ["clock open", "mailer open"]
    assert sorted(events[2:]) == ["clock close", "mailer close"]


async def test_unused_factories_are_never_built() -> None:
    """A scope builds only what is asked for."""
    services = Services()
    built: list[str] = []

    def make() -> Iterator[Clock]:
        built.append("clock")
        yield Clock()

    services.register_factory(Clock, make)

    async with services.scope():
        pass

    assert built == []


async def test_a_missing_service_raises() -> None:
    """Asking for something never registered is an error, not None."""
    async with Services().scope() as scope:
        with pytest.raises(svcs.exceptions.ServiceNotFoundError):
            await scope.aget(Clock)


async def test_override_replaces_a_registration_and_restores_it() -> None:
    """Inside override the fake is served; afterwards the original factory is back."""
    services = Services()
    services.register_factory(Clock, lambda: Clock("real"))
    fake = Clock("fake")

    with services.override(Clock, fake) as given:
        assert given is fake
        async with services.scope() as scope:
            assert await scope.aget(Clock) is fake

    async with services.scope() as scope:
        assert (await scope.aget(Clock)).name == "real"


async def test_override_restores_a_generator_factory_with_its_cleanup() -> None:
    """A restored generator factory still runs its cleanup when the scope ends."""
    services = Services()
    events: list[str] = []

    def make() -> Iterator[Clock]:
        yield Clock("real")
        events.append("cleanup")

    services.register_factory(Clock, make)

    with services.override(Clock, Clock("fake")):
        pass
    async with services.scope() as scope:
        assert (await scope.aget(Clock)).name == "real"

    assert events == ["cleanup"]


def test_override_never_touches_the_registry() -> None:
    """The registration stays the very one that was there, options included, during and after."""
    services = Services()
    services.registry.register_factory(
        Clock, lambda: Clock(), enter=False, suppress_context_exit=False
    )
    before = services.registry.get_registered_service_for(Clock)

    with services.override(Clock, Clock("fake")):
        assert services.registry.get_registered_service_for(Clock) is before

    assert services.registry.get_registered_service_for(Clock) is before


async def test_override_applies_only_to_scopes_opened_inside_the_block() -> None:
    """A scope opened before the block keeps the real service; one opened inside gets the fake."""
    services = Services()
    services.register_factory(Clock, lambda: Clock("real"))

    async with services.scope() as before:
        with services.override(Clock, Clock("fake")):
            async with services.scope() as inside:
                assert (await inside.aget(Clock)).name == "fake"
            assert (await before.aget(Clock)).name == "real"


async def test_override_without_a_previous_registration_removes_it_afterwards() -> None:
    """Overriding a type nobody registered leaves it unregistered after the block."""
    services = Services()

    with services.override(Clock, Clock("fake")):
        async with services.scope() as scope:
            assert (await scope.aget(Clock)).name == "fake"

    assert Clock not in services.registry
    async with services.scope() as scope:
        with pytest.raises(svcs.exceptions.ServiceNotFoundError):
            await scope.aget(Clock)


async def test_override_restores_even_when_the_block_raises() -> None:
    """An exception in the block does not leave the fake registered."""
    services = Services()
    services.register_value(Clock, Clock("real"))
    before = services.registry.get_registered_service_for(Clock)

    with pytest.raises(RuntimeError), services.override(Clock, Clock("fake")):
        raise RuntimeError("test failed")

    assert services.registry.get_registered_service_for(Clock) is before
    async with services.scope() as scope:
        assert (await scope.aget(Clock)).name == "real"


async def test_nested_overrides_unwind_in_order() -> None:
    """An override inside another serves the inner fake, then the outer, then the original."""
    services = Services()
    services.register_value(Clock, Clock("real"))

    async def current() -> str:
        async with services.scope() as scope:
            return (await scope.aget(Clock)).name

    with services.override(Clock, Clock("outer")):
        with services.override(Clock, Clock("inner")):
            assert await current() == "inner"
        assert await current() == "outer"
    assert await current() == "real"


async def test_aclose_runs_registry_close_callbacks() -> None:
    """Closing the services runs the registry's on-close callbacks."""
    services = Services()
    closed: list[str] = []

    async def on_close() -> None:
        closed.append("clock")

    services.registry.register_value(Clock, Clock(), on_registry_close=on_close)

    await services.aclose()

    assert closed == ["clock"]


def test_a_given_registry_is_used() -> None:
    """Services wraps the svcs registry it is given."""
    registry = svcs.Registry()

    assert Services(registry).registry is registry
