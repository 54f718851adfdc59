"""The real stack as a session fixture: SeaweedFS, NATS and the four services as local processes on
free ports in a temp dir, with the metadata database on SQLite and again on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from filestore.stack import Stack, StackConfig, StackPorts
from filestore.v1 import metadata_service_pb2_grpc
from tests.browser import BUNDLE_NAME, CHROMIUM, PageSite, install_pages, page_server
from tests.external_stack import external_stack_from_env
from tests.stacks import scratch_postgres_database, traced_services
from tests.support import (
    Client,
    ClientFactory,
    StackClients,
    StatusEvents,
    collected_status_events,
    fresh_tenant,
    service_token,
    stack_channel,
)

#: `make test-stack`: a running stack named by FILESTORE_STACK_JSON or FILESTORE_EXTERNAL_* (see
#: tests/external_stack.py); None when each session starts its own.
EXTERNAL_STACK = external_stack_from_env(os.environ)


@pytest.fixture(
    scope="session", params=["external"] if EXTERNAL_STACK is not None else ["sqlite", "postgresql"]
)
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, page_site: PageSite
) -> AsyncIterator[Stack]:
    if EXTERNAL_STACK is not None:
        yield EXTERNAL_STACK
        return
    async with AsyncExitStack() as resources:
        database_url = None
        if request.param == "postgresql":
            database_url = await resources.enter_async_context(scratch_postgres_database())
        home: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
        extra_env = traced_services(home)
        # The test pages' origin, allowed by the face and (the broker sets the bucket's CORS rules
        # from it at start) by storage: the pages may call the face and PUT parts.
        pages_allowed = {"FILESTORE_CORS_ORIGINS": page_site.origin}
        extra_env["upload"] = {**extra_env["upload"], **pages_allowed}
        extra_env["edge"] = {**extra_env.get("edge", {}), **pages_allowed}
        config = StackConfig(
            home=home,
            ports=StackPorts.free(),
            database_url=database_url,
            ready_timeout_s=60.0,
            extra_env=extra_env,
            # The demo page loads the bundle the browser tests build (read at every request, so it
            # may be written after the stack started: tests/browser.py install_pages).
            web_bundle=page_site.root / BUNDLE_NAME,
        )
        yield await resources.enter_async_context(Stack(config))


@pytest.fixture(scope="session")
def page_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageSite]:
    """The origin the browser tests' pages come from; started before the stack, whose CORS allows it.
    Serving an empty directory costs nothing: the pages are installed by the first browser test."""
    root = tmp_path_factory.mktemp("pages")
    with page_server(root) as origin:
        yield PageSite(origin, root)


@pytest.fixture(scope="session")
async def chromium(page_site: PageSite) -> AsyncIterator[Browser]:
    """Headless Chromium, once per session, with the test pages and the client bundle installed."""
    install_pages(page_site.root)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture
async def web_page(chromium: Browser, page_site: PageSite) -> AsyncIterator[Page]:
    """A fresh browser context (its own localStorage) with the test harness loaded from the page site.
    Errors in the page's console fail loudly in the test output."""
    context = await chromium.new_context()
    page = await context.new_page()
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    await page.goto(f"{page_site.origin}/index.html")
    await page.wait_for_function("document.getElementById('state').textContent === 'ready'")
    yield page
    await context.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_stack: starts, stops or inspects stack processes itself; not for `make test-stack`"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against an external stack, run only the tests that use it (the `stack` fixture) and need
    nothing but its endpoints; the others start stacks of their own or control its processes."""
    if EXTERNAL_STACK is None:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        uses_it = "stack" in getattr(item, "fixturenames", ())
        (keep if uses_it and item.get_closest_marker("local_stack") is None else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
async def client_for(stack: Stack) -> AsyncIterator[ClientFactory]:
    """``client_for(subject, tenant)`` builds a Client whose calls carry that user's token."""
    clients = StackClients(stack)
    yield clients
    await clients.close()


@pytest.fixture
async def service_metadata(stack: Stack) -> AsyncIterator[metadata_service_pb2_grpc.MetadataServiceAsyncStub]:
    """The metadata service as a Filestore service (the broker, the processor) calls it."""
    token = service_token(stack)
    async with stack_channel(stack.endpoints, stack.endpoints.metadata_addr, token=lambda: token) as channel:
        yield metadata_service_pb2_grpc.MetadataServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant of the test's own, so counts and listings see only what the test made."""
    return fresh_tenant()


@pytest.fixture
async def alice(client_for: ClientFactory, tenant: str) -> Client:
    """A user of the test's own tenant. Async: a gRPC channel belongs to the running event loop, and
    a plain fixture runs where there is none."""
    return client_for("alice", tenant)


@pytest.fixture
async def status_events(stack: Stack) -> AsyncIterator[StatusEvents]:
    async with collected_status_events(stack) as collector:
        yield collector
