"""The portal's pages laid out in a real browser at 1280 px (a laptop) and 768 px (a tablet,
portrait), with a fleet that stretches them: long device names, UUIDs, IPv6 addresses, long
usernames, metadata, revoked devices, a revoke through the API.

Each page is measured in the page itself (`LAYOUT_PROBLEMS`): nothing may be wider than the
box it sits in unless that box is a scroll container (the tables' `.table-wrap`), the page
itself never scrolls sideways, no word, date or id breaks inside itself (only at spaces, after
a slash, after a hyphen that is not between digits, or at a <wbr>), a badge stays on one
line, and no chart text falls outside the chart's drawing (clipped). Screenshots go under
pytest's tmp dir, one per page and width.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.portal import sign_in, staff

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = (1280, 768)
IPV6 = "2001:db8:85a3:8d3:1319:8a2e:370:7348"

# Evaluated in the page; returns one sentence per problem found.
LAYOUT_PROBLEMS = r"""
() => {
  const problems = [];
  const name = (element) => {
    const classes = typeof element.className === "string" && element.className.trim()
      ? "." + element.className.trim().split(/\s+/).join(".") : "";
    return `${element.tagName.toLowerCase()}${element.id ? "#" + element.id : ""}${classes}`
      + ` "${(element.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50)}"`;
  };
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth) {
    problems.push(`the page is ${root.scrollWidth} px wide in a ${window.innerWidth} px window`);
  }
  // Wider than its box: an element whose content spills out of it, unless it scrolls.
  for (const element of document.body.querySelectorAll("*")) {
    if (element.closest("svg") || ["INPUT", "TEXTAREA", "SELECT"].includes(element.tagName)) continue;
    const style = getComputedStyle(element);
    if (style.display === "inline" || style.display === "none" || element.clientWidth === 0) continue;
    if (["auto", "scroll"].includes(style.overflowX)) continue;
    if (element.scrollWidth > element.clientWidth + 1) {
      problems.push(`${name(element)}: content ${element.scrollWidth} px wide in ${element.clientWidth} px`);
    }
  }
  // A badge is one line: its content box is not taller than one line.
  for (const badge of document.querySelectorAll(".badge")) {
    const style = getComputedStyle(badge);
    const content = badge.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    if (content > parseFloat(style.lineHeight) * 1.5) {
      const lines = Math.round(content / parseFloat(style.lineHeight));
      problems.push(`badge ${name(badge)} wraps onto ${lines} lines`);
    }
  }
  // No word breaks inside itself: each piece between break points lies on one line.
  const cells = document.querySelectorAll("td, th, dd, dt, caption, .badge, .tile, main li, h1, h2");
  for (const cell of cells) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent;
      // Break points: spaces, after a slash or dash, after a hyphen unless between digits (dates).
      for (const match of text.matchAll(/(?:[^\s\-\/—]|(?<=\d)-(?=\d))+[\-\/—]?/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set(Array.from(range.getClientRects()).map((rect) => Math.round(rect.top)));
        if (tops.size > 1) problems.push(`"${match[0]}" breaks inside itself in ${name(cell)}`);
      }
    }
  }
  // Chart text inside the drawing: an SVG clips what falls outside its viewBox.
  for (const svg of document.querySelectorAll("svg[viewBox]")) {
    const box = svg.viewBox.baseVal;
    for (const text of svg.querySelectorAll("text")) {
      const bounds = text.getBBox();
      if (bounds.x < box.x || bounds.y < box.y || bounds.x + bounds.width > box.x + box.width
          || bounds.y + bounds.height > box.y + box.height) {
        problems.push(`chart text "${text.textContent}" is clipped by the chart's edge`);
      }
    }
  }
  return problems;
}
"""


def seed_fleet(operator: Any, settings: Any) -> dict[str, str]:
    """Devices as a real fleet has them; returns the ids of the pages to visit."""
    from devices.lifecycle import revoke_device
    from devices.registration import RegistrationRequest, register_device
    from pki.profiles import KeyType, RevocationReason

    def register(name: str, hardware_id: str | None, **metadata: str) -> Any:
        return register_device(
            RegistrationRequest(
                name=name, hardware_id=hardware_id, key_type=KeyType.EC_P256, metadata=metadata
            ),
            actor=operator,
            address=IPV6,
        ).device

    register(
        "north-wing-boiler-room-temperature-sensor-0042",
        "SN-7F3A9C2E11B04D8F",
        site="Lyon Part-Dieu, building C, floor 12",
        firmware="v2.14.3-rc1+build.20261129",
    )
    register("ThermostatBuildingC3Floor12Room1207Unit", "HW-00000000-0000-4000-8000-000000000042")
    for index, days in enumerate([3, 9, 20, 365]):  # some for the expiry chart's bars
        settings.CERT_VALIDITY_DAYS = days
        register(f"meter-{index:04d}", None)
    revoked_here = register("gateway-west-entrance-backup-uplink", "GW-WEST-0001")
    revoke_device(revoked_here, RevocationReason.KEY_COMPROMISE, actor=operator, address=IPV6)
    revoked_by_api = register("cold-store-freezer-door-contact-0007", "CS-DOOR-0007", site="Cold store 2")
    return {"api_revoked": str(revoked_by_api.id), "revoked": str(revoked_here.id)}


def revoke_through_the_api(portal: str, device_id: str, username: str) -> None:
    from accounts.services import create_api_token

    user = staff(username, "Operators", enrolled=False)
    request = urllib.request.Request(  # noqa: S310 (the live server's http:// URL)
        f"{portal}/revoke/{device_id}",
        data=json.dumps({"reason": "cessationOfOperation"}).encode(),
        headers={
            "Authorization": f"Token {create_api_token(user).value}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        assert response.status == 200


def check_layout(page: Any, shots: Path, label: str) -> list[str]:
    """Measure the page at each width and keep a screenshot of each; the problems, labelled."""
    found = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)  # one layout pass after the resize
        page.screenshot(path=str(shots / f"{label}-{width}.png"), full_page=True)
        found += [f"{label} at {width} px: {problem}" for problem in page.evaluate(LAYOUT_PROBLEMS)]
    return found


def test_pages_keep_their_layout_at_1280_and_768(
    portal: str, page: Any, tmp_path: Path, settings: Any
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    refused: list[str] = []  # stylesheet, script, icon: anything the pages ask for and miss
    page.on("response", lambda response: refused.extend([response.url] if response.status >= 400 else []))
    operator = staff("fleet-administrator", "Operators")
    ids = seed_fleet(operator, settings)
    revoke_through_the_api(portal, ids["api_revoked"], "integration-pipeline")
    sign_in(page, portal, operator)

    problems = check_layout(page, shots, "dashboard")
    page.goto(f"{portal}/portal/devices/")
    problems += check_layout(page, shots, "device-list")
    for key in ("api_revoked", "revoked"):
        page.goto(f"{portal}/portal/devices/{ids[key]}/")
        problems += check_layout(page, shots, f"device-{key}")

    page.goto(f"{portal}/portal/devices/{ids['api_revoked']}/")
    history = page.get_by_role("region", name="Audit history").inner_text()

    # A hardware id already taken: the error sits on its field, not in a banner above the form.
    page.goto(f"{portal}/portal/devices/register/")
    page.get_by_label("Name").fill("north-wing-boiler-room-temperature-sensor-0043")
    page.get_by_label("Hardware id (optional)").fill("SN-7F3A9C2E11B04D8F")
    page.get_by_role("button", name="Register").click()
    field = page.locator(".field.has-error", has=page.get_by_label("Hardware id (optional)"))
    field_errors = field.get_by_role("alert").all_inner_texts()
    banners = page.locator("form .alert").all_inner_texts()
    problems += check_layout(page, shots, "register-duplicate")

    # The bulk page's preview of a file with long names, ids and metadata.
    page.goto(f"{portal}/portal/bulk/")
    rows = [
        "name,hardware_id,key_type,site,installer",
        "south-wing-chiller-plant-pressure-transducer-0001,HW-5A1B2C3D4E5F60718293A4B5C6D7E8F9,ec-p256,"
        "Lyon Part-Dieu building C,installer-with-a-very-long-account-name@example.org",
        f"ThermostatBuildingC3Floor12Room1208Unit,{IPV6},,Villeurbanne,ops",
    ]
    page.get_by_label(re.compile("CSV file")).set_input_files(
        files=[{"name": "fleet.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()}]
    )
    page.get_by_role("button", name="Check the file").click()
    page.wait_for_url(re.compile(r"/portal/bulk/[0-9a-f-]{36}/$"))
    problems += check_layout(page, shots, "bulk-preview")

    assert not problems, "\n".join(problems)
    assert refused == []
    # The field-change history names the integrator whose token revoked the device.
    assert re.search(r"update by integration-pipeline from 127\.0\.0\.1: status active → revoked", history), (
        history
    )
    assert "by the system" not in history
    # A hardware id already taken: the error sits on its field, not in a banner above the form.
    assert banners == []
    assert len(field_errors) == 1 and field_errors[0].startswith(
        "A device with hardware id 'SN-7F3A9C2E11B04D8F'"
    )
    # Browsers and crawlers ask for /favicon.ico whatever the page links: it leads to the icon.
    icon = page.request.get(f"{portal}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.body()


def test_the_layout_check_catches_overflow_broken_words_and_wrapped_badges(portal: str, page: Any) -> None:
    """The measure itself can fail: the faults the portal had, put back into a page."""
    page.set_content(
        """<!doctype html><html><head><style>
        body { margin: 0; font: 16px/1.5 sans-serif; } table { width: 300px; }
        .anywhere td { overflow-wrap: anywhere; } .narrow td { max-width: 60px; }
        .badge { display: inline-block; padding: 0 4px; }
        </style></head><body><main>
        <table class="anywhere"><tr><td>administrator-account</td>
        <td>2001:db8:85a3:8d3:1319:8a2e:370:7348</td><td>a</td><td>b</td><td>c</td><td>d</td><td>e</td></tr>
        </table>
        <div style="width: 100px"><div style="width: 240px">too wide</div></div>
        <div style="width: 50px"><span class="badge">Revoked device</span></div>
        <svg viewBox="0 0 100 20" width="100" height="20"><text x="50" y="20">days</text></svg>
        </main></body></html>"""
    )
    problems = "\n".join(page.evaluate(LAYOUT_PROBLEMS))
    assert "breaks inside itself" in problems
    assert "content 240 px wide in 100 px" in problems
    assert "badge span.badge" in problems
    assert 'chart text "days" is clipped' in problems
