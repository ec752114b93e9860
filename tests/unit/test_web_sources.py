"""The browser app's sources (web/): checks that need no browser."""

from __future__ import annotations

import json

from tandem.advisor.networks import MIN_RTO_MS, MSS_BYTES, NETWORKS
from tests.conftest import REPO

WEB = REPO / "web"
# Every API that parses a string as HTML: the page builds its UI with DOM nodes (web/src/dom.js's el()).
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment",
              "DOMParser", "srcdoc")


def test_the_page_hands_no_string_to_an_html_parser():
    sources = [*sorted((WEB / "src").glob("*.js")), WEB / "index.html", WEB / "public" / "sw.js"]
    assert len(sources) > 10
    used = {str(p.relative_to(WEB)): [s for s in HTML_SINKS if s in p.read_text()] for p in sources}
    assert not {p: s for p, s in used.items() if s}, used


def test_the_pages_network_profiles_are_the_advisors():
    """web/src/networks.json copies the advisor's online profiles, which the deep-art view projects the
    cloud's frame rate onto: the same numbers as tandem.advisor.networks."""
    copied = json.loads((WEB / "src" / "networks.json").read_text())
    assert copied["mss_bytes"] == MSS_BYTES and copied["min_rto_ms"] == MIN_RTO_MS
    want = {name: {"rtt_ms": p.rtt_ms, "up_mbps": p.up_mbps, "down_mbps": p.down_mbps, "loss": p.loss}
            for name, p in NETWORKS.items() if p.online}
    assert copied["profiles"] == want

