"""The browser class of the red-team suite runs the page in the web tests' Chromium against their
`tandem serve` (tests/integration/web/conftest.py): the same fixtures, not copies."""

from tests.integration.web.conftest import artifacts, browser, web_server  # noqa: F401
