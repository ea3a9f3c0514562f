"""Review: the SSRF guard maps internationalised host names as browsers, curl and httpx do.

Python's `idna` codec is IDNA 2003: it maps `faß.de` to `fass.de` and folds a final sigma into
the medial one, so the request (and any `Authorization` it carries) went to another domain than
the one named.
"""

import pytest

from apiforge.tools.netguard import parse_url


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://faß.de/", "xn--fa-hia.de"),  # IDNA 2003: fass.de
        ("http://\u03c2.example/", "xn--3xa.example"),  # final sigma; IDNA 2003: xn--4xa
        ("http://BÜCHER.example./", "xn--bcher-kva.example"),
        ("http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/", "example.com"),  # full width
        ("http://Example.COM/", "example.com"),
    ],
)
def test_internationalised_names_map_by_uts46(url: str, host: str) -> None:
    target = parse_url(url)
    assert target.host == host
    assert target.host_header == host
